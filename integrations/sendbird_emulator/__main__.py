"""``python -m integrations.sendbird_emulator``."""

from integrations.sendbird_emulator.cli import main

main()
