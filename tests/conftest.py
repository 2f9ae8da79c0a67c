"""Shared test setup.

`src` goes on the import path so the tests run even where the package is not installed
(an editable install needs the README that pyproject names).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import typer

SRC = Path(__file__).resolve().parents[1] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))


@pytest.fixture(scope="session")
def cli_app() -> typer.Typer:
    """The real `mmalign` app; if its other sub-apps cannot be imported yet, an app that
    mounts `data_app` the same way (so `["data", ...]` arguments work either way)."""
    try:
        from mmalign.cli import app
    except ImportError:
        from mmalign.io.cli import data_app

        app = typer.Typer(no_args_is_help=True)

        @app.callback()
        def _root() -> None:
            """Test stand-in for the mmalign root app."""

        app.add_typer(data_app, name="data")
    return app


def varied_samples():
    """Samples covering the shapes a converter can get wrong."""
    from mmalign.records import Sample, Turn

    return [
        Sample("s-multi", ["img/a.png", "img/b.png"], [
            Turn("user", "<image>\n<image>\nCompare these two."),
            Turn("assistant", "The first is red; the second is blue."),
            Turn("user", "Which is larger?"),
            Turn("assistant", "The second."),
        ], category="reasoning", source="coco",
            meta={"nested": {"deep": {"flag": True, "n": None}}, "list": [1, 2.5, "x", []]}),
        Sample("s-text-only", [], [
            Turn("user", "Tell me a fact."),
            Turn("assistant", "Water boils at 100 °C at sea level."),
        ], category="conversation"),
        Sample("s-system-ünï", ["imgs/café 漢字.png"], [
            Turn("system", "Answer in one sentence.\n"),
            Turn("user", "<image>Describe the scene 🚀"),
            Turn("assistant", "  A quiet street, at dusk.  \n\n"),
        ], category="detail", source="ünïcödé", meta={"émoji": "🙂", "empty": {}}),
        Sample("s-other", ["x.jpg"], [
            Turn("user", "What is this?<image>"),
            Turn("assistant", "A jar."),
        ]),
        Sample("s-middle", ["l.png", "r.png"], [
            Turn("user", "Left <image> and right <image>, same?"),
            Turn("assistant", "No."),
        ], category="detail", meta={"rows": [{"a": [1, {"b": []}]}], "float": 0.1}),
    ]


def varied_pairs():
    from mmalign.records import PreferencePair, Turn

    return [
        PreferencePair("p-povid", ["coco/1.jpg"], [Turn("user", "<image>\nDescribe the image.")],
                       "A dog on grass.", "A cat on a sofa.", rejected_images=["noised/1.png"],
                       origin="povid", scores={"helpfulness": 4.0, "judge": {"name": "x"}},
                       meta={"noise_step": 500, "tags": ["a", "b"]}),
        PreferencePair("p-multi", ["a.png", "b.png"], [
            Turn("system", "Be exact."),
            Turn("user", "<image><image>What changed?"),
            Turn("assistant", "The light."),
            Turn("user", "Anything else?"),
        ], "The door is open.\n", "Nothing else.", origin="mmdpo",
            scores={"chosen": 0.9, "rejected": 0.1}),
        PreferencePair("p-text", [], [Turn("user", "Say hi in French 🇫🇷")], "Bonjour !",
                       "Hola."),
        PreferencePair("p-empty-rej", [], [Turn("user", "Q?")], "yes", "no",
                       rejected_images=[], meta={"note": "rejected_images is [] not None"}),
    ]


@pytest.fixture
def samples():
    return varied_samples()


@pytest.fixture
def pairs():
    return varied_pairs()


def _make_png(path: Path, size: tuple[int, int] = (4, 3), color=(200, 10, 10)) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="PNG")
    return path


@pytest.fixture
def make_png():
    """Factory: make_png(path, size=(w, h)) writes a small valid PNG and returns its path."""
    return _make_png
