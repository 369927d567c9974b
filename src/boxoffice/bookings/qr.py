"""A ticket's secret code as a QR code: SVG for the booking page, PNG for the e-mail.

Always a full QR code (never a Micro QR, which segno would pick for short codes and which
few phone cameras read), at error correction level M exactly: segno's default would raise
it as far as the version allows, and the door scanners are tuned for M. A 16-character code
fits version 1 (21 × 21 modules).
"""

import io

import segno

# PNG: 8 pixels a module with the standard quiet zone of 4 modules: 232 px square for a
# version 1 code, sharp in a mail client and on paper at any common DPI.
_PNG_SCALE = 8
# SVG: vector, so it prints sharp at any size; this only sets its size on screen (174 px).
_SVG_SCALE = 6


def qr_code(code: str) -> segno.QRCode:
    """The QR code of `code`, as every ticket shows it."""
    return segno.make_qr(code, error="m", boost_error=False)


def qr_svg(code: str) -> str:
    """Inline SVG markup (no XML declaration) for an HTML page."""
    out = io.BytesIO()
    # A white background of its own: on a dark page the quiet zone must still be light.
    qr_code(code).save(out, kind="svg", scale=_SVG_SCALE, xmldecl=False, light="#fff")
    return out.getvalue().decode().strip()


def qr_png(code: str) -> bytes:
    out = io.BytesIO()
    qr_code(code).save(out, kind="png", scale=_PNG_SCALE)
    return out.getvalue()
