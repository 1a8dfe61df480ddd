"""Six small sample images with realness descriptions, free to redistribute (see generate.py)."""

from pathlib import Path

SAMPLES_DIR = Path(__file__).parent
IMAGES_DIR = SAMPLES_DIR / "images"
DESCRIPTIONS_CSV = SAMPLES_DIR / "descriptions.csv"
