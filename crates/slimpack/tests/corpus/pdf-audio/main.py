"""Renders a PDF page to PNG (pdftoppm) and transcodes a WAV (ffmpeg)."""
import os

from pdf2image import convert_from_path, pdfinfo_from_path
from pydub import AudioSegment

here = os.path.dirname(os.path.abspath(__file__))
info = pdfinfo_from_path(os.path.join(here, "samples", "page.pdf"))
pages = convert_from_path(os.path.join(here, "samples", "page.pdf"), dpi=30, output_folder="/tmp", fmt="png")
print("pdf pages:", info["Pages"], "rendered:", pages[0].size)
sound = AudioSegment.from_file(os.path.join(here, "samples", "tone.wav"))
sound.export("/tmp/tone.ogg", format="ogg")
print("audio ms:", len(sound), "ogg bytes:", os.path.getsize("/tmp/tone.ogg") > 0)
