"""Ground floor helpers used by every stage: devices and seeding, atomic files and safe checkpoint reading,
command-line errors, DDP. Imports nothing of the package above ``config`` and ``paths``."""
