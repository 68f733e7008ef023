"""CharHub-shaped Prisma migration directories for the migration tests (quoted CamelCase tables, enums)."""

from __future__ import annotations

from pathlib import Path

INIT = """-- CreateEnum
CREATE TYPE "Visibility" AS ENUM ('PUBLIC', 'PRIVATE', 'UNLISTED');

-- CreateTable
CREATE TABLE "User" (
    "id" TEXT NOT NULL,
    "email" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "User_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "Character" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "userId" TEXT NOT NULL,
    "visibility" "Visibility" NOT NULL DEFAULT 'PRIVATE',
    CONSTRAINT "Character_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE UNIQUE INDEX "User_email_key" ON "User"("email");

-- AddForeignKey
ALTER TABLE "Character" ADD CONSTRAINT "Character_userId_fkey" FOREIGN KEY ("userId") REFERENCES "User"("id") \
ON DELETE RESTRICT ON UPDATE CASCADE;
"""

USAGE_LOG = """-- CreateTable
CREATE TABLE "UsageLog" (
    "id" TEXT NOT NULL,
    "characterId" TEXT NOT NULL,
    "timestamp" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "processed" BOOLEAN NOT NULL DEFAULT false,
    CONSTRAINT "UsageLog_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "UsageLog_timestamp_idx" ON "UsageLog"("timestamp");
"""

ADD_COLUMN = """-- AlterTable
ALTER TABLE "Character" ADD COLUMN "tagline" TEXT;
"""

CHARHUB = {
    "20250101000000_init": INIT,
    "20250201000000_usage_log": USAGE_LOG,
    "20250301000000_character_tagline": ADD_COLUMN,
}


def write_migrations(root: Path, migrations: dict[str, str]) -> Path:
    """``root/<name>/migration.sql`` for each migration, plus Prisma's migration_lock.toml."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "migration_lock.toml").write_text('provider = "postgresql"\n')
    for name, text in migrations.items():
        (root / name).mkdir(exist_ok=True)
        (root / name / "migration.sql").write_bytes(text.encode())
    return root
