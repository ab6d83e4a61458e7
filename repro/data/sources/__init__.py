"""Source registry: SOURCES = {name: loader}. A new source is one module plus one line here.

Each training-source loader is `load(path, split, **options) -> (pair table, drops)`: an Arrow table in
`repro.data.schema.PAIR_SCHEMA` and a Counter of dropped rows by reason. `path` is a Hub id, a local folder
laid out like the Hub repo, or `fixture:<name>` for the copies shipped with the package; `options` are the
loader's keyword choices (`data.sources[i].options` in a recipe).
"""
from __future__ import annotations

from functools import partial

from repro.data.sources import (helpsteer2, helpsteer2_preference, magpie_dpo, magpie_ultra, nectar, offsetbias,
                                preference700k, skywork80k, wildguard)

# Already curated sets: Magpie selection and the WildGuard stages pass their pairs through untouched
# (decontamination and duplicate dropping still apply, so v0.1 + decontamination gives a v0.2-like set).
RELEASED = {"skywork80k"}

SOURCES = {
    "skywork80k": skywork80k.load,
    "offsetbias": offsetbias.load,
    "helpsteer2": helpsteer2.load,
    "wildguard": wildguard.load,
    "magpie_ultra": magpie_ultra.load,
    **{name: partial(magpie_dpo.load, source=name) for name in magpie_dpo.SETS},  # Pro Llama-3.1, Pro, Air
    "preference700k": preference700k.load,        # the paper's baseline mixture
    "nectar": nectar.load,                        # Table 4's contamination row (also usable as pairs)
    "helpsteer2_preference": helpsteer2_preference.load,  # an extension source, not in the paper's recipe
}
