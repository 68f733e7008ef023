"""A CharHub-shaped schema as Prisma creates it (quoted CamelCase names, text ids, timestamp(3) in UTC, enums)."""

from __future__ import annotations

import psycopg

CHARHUB_SCHEMA = """
CREATE TYPE "TranslationStatus" AS ENUM ('ACTIVE', 'OUTDATED', 'FAILED');
CREATE TYPE "CurationStatus" AS ENUM ('PENDING', 'APPROVED', 'REJECTED', 'FAILED');
CREATE TABLE "User" ("id" TEXT PRIMARY KEY, "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE "Character" ("id" TEXT PRIMARY KEY, "avatar" TEXT, "coverUrl" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE "Conversation" ("id" TEXT PRIMARY KEY, "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE "Message" ("id" TEXT PRIMARY KEY,
    "conversationId" TEXT NOT NULL REFERENCES "Conversation"("id") ON DELETE CASCADE ON UPDATE CASCADE,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE "UsageLog" ("id" TEXT PRIMARY KEY, "userId" TEXT, "timestamp" TIMESTAMP(3) NOT NULL,
    "processed" BOOLEAN NOT NULL DEFAULT false, "tokens" INTEGER NOT NULL DEFAULT 0);
CREATE INDEX "UsageLog_timestamp_idx" ON "UsageLog"("timestamp");
CREATE TABLE "LLMUsageLog" ("id" TEXT PRIMARY KEY, "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE INDEX "LLMUsageLog_createdAt_idx" ON "LLMUsageLog"("createdAt");
CREATE TABLE "CreditTransaction" ("id" TEXT PRIMARY KEY, "userId" TEXT NOT NULL,
    "timestamp" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP, "amount" DOUBLE PRECISION NOT NULL);
CREATE TABLE "CorrectionJobLog" ("id" TEXT PRIMARY KEY, "startedAt" TIMESTAMP(3) NOT NULL);
CREATE TABLE "BatchGenerationLog" ("id" TEXT PRIMARY KEY, "executedAt" TIMESTAMP(3) NOT NULL);
CREATE TABLE "ConversationMemory" ("id" TEXT PRIMARY KEY, "createdAt" TIMESTAMP(3) NOT NULL);
CREATE TABLE "MessageTranslation" ("id" TEXT PRIMARY KEY,
    "messageId" TEXT NOT NULL REFERENCES "Message"("id") ON DELETE CASCADE,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE "ContentTranslation" ("id" TEXT PRIMARY KEY, "status" "TranslationStatus" NOT NULL DEFAULT 'ACTIVE',
    "updatedAt" TIMESTAMP(3) NOT NULL);
CREATE TABLE "CuratedImage" ("id" TEXT PRIMARY KEY, "url" TEXT NOT NULL,
    "status" "CurationStatus" NOT NULL DEFAULT 'PENDING', "rejectedAt" TIMESTAMP(3));
"""


def create_charhub_schema(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(CHARHUB_SCHEMA)
