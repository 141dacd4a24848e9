"""Write the preview playground's example list from the gallery: `python docs/templates/build.py`.

The templates in this folder are the source; the page reads wallet_proxy/preview/static/gallery.json
(shipped with the package). A test fails when the two differ, naming this command.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE.parent.parent / "wallet_proxy" / "preview" / "static" / "gallery.json"
CASES = {"wallet-list": "Wallet list", "offer-expiring": "Offer expiring soon", "points-balance": "Points balance",
         "empty-wallet": "Empty-wallet fallback", "offer-issued": "Offer issued (trigger properties)",
         "canvas-properties": "Canvas reading its properties"}
CHANNELS = {"email.html": "email, HTML", "email.txt": "email, plain text", "amp.html": "email, AMP",
            "push": "push", "in-app": "in-app message", "sms": "SMS"}


def examples() -> list:
    """[{name, file, template}] for every template, in the gallery's order."""
    found = []
    for case, case_name in CASES.items():
        for channel, channel_name in CHANNELS.items():
            path = HERE / case / f"{channel}.liquid"
            if path.exists():
                found.append({"name": f"{case_name} — {channel_name}", "file": f"{case}/{path.name}",
                              "template": path.read_text()})
    return found


def render() -> str:
    return json.dumps(examples(), ensure_ascii=False, indent=1) + "\n"


def every_template() -> list:
    """Every .liquid file under this folder (the test checks none is left out of the list)."""
    return sorted(str(p.relative_to(HERE)) for p in HERE.glob("*/*.liquid"))


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT} ({len(examples())} examples)")
