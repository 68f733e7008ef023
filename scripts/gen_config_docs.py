"""Write docs/configuration.md from the settings' own descriptions: ``uv run python scripts/gen_config_docs.py``."""

from pathlib import Path

from charhub_ops.settings import GROUPS
from charhub_ops.settings.reference import configuration_markdown

if __name__ == "__main__":
    path = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    path.write_text(configuration_markdown(GROUPS))
    print(f"wrote {path}")
