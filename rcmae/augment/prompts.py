"""Factory-noise text prompts for diffusion augmentation, each tagged with the noise family that
factory-mix synthesises for it. The first six are the paper's Table 1, verbatim."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rcmae.config_input import Section, doc_field
from rcmae.errors import ConfigError

FAMILIES = ("saw", "press", "crusher", "moulding", "woodworking", "pneumatic")


@dataclass(frozen=True)
class Prompt:
    family: str
    text: str


TABLE_1 = (
    Prompt("saw", "add sharp and metallic screeching sound created by metal-cutting saws in a fabrication "
                  "workshop as they cut through various metal materials"),
    Prompt("press", "add rhythmic and pulsating buzzing sound produced by printing presses in a publishing house "
                    "as they rapidly print and collate pages of books and magazines"),
    Prompt("crusher", "add continuous and powerful rumbling noise accompanied by the grinding and crushing of rocks "
                      "in a mining quarry as large crushers pulverize rocks into smaller fragments"),
    Prompt("moulding", "add continuous and rhythmic clicking noise produced by injection molding machines in a "
                       "plastic manufacturing facility as they shape molten plastic into various products"),
    Prompt("woodworking", "add rhythmic and repetitive whirring noise accompanied by the sound of cutting tools in "
                          "a woodworking shop as they shape and carve wood materials"),
    Prompt("pneumatic", "add continuous and powerful whirring noise accompanied by the sound of pneumatic tools in "
                        "an automobile assembly line as vehicle parts are fastened"),
)

MORE = tuple(Prompt(family, text) for family, text in (
    ("saw", "add high-pitched whining noise of band saws slicing steel bars in a metal service center"),
    ("saw", "add shrill grinding screech of abrasive cut-off wheels cutting pipes in a plumbing workshop"),
    ("saw", "add intermittent metallic squealing of circular cold saws trimming aluminium profiles in a window "
            "factory"),
    ("saw", "add harsh scraping and screeching of angle grinders deburring welded seams in a shipyard"),
    ("saw", "add piercing metallic whine of plasma cutters and saws in a steel fabrication plant"),
    ("press", "add heavy rhythmic thumping of stamping presses punching sheet metal in an automotive body shop"),
    ("press", "add steady pulsating buzz of offset printing machines running newspapers overnight in a print works"),
    ("press", "add repetitive pounding of forging hammers shaping hot steel in a forge"),
    ("press", "add periodic hissing and thudding of hydraulic presses moulding panels in a composites factory"),
    ("press", "add regular clunking of punch presses perforating metal sheets in an appliance plant"),
    ("crusher", "add deep continuous rumble of ball mills grinding ore in a mineral processing plant"),
    ("crusher", "add heavy crunching and rattling of jaw crushers breaking concrete in a recycling yard"),
    ("crusher", "add low droning roar of rotary kilns and conveyors in a cement works"),
    ("crusher", "add rolling thunderous noise of gravel tumbling through vibrating screens in a quarry"),
    ("crusher", "add constant grinding rumble of shredders tearing scrap metal in a scrapyard"),
    ("moulding", "add steady ticking and clacking of blow molding machines forming plastic bottles in a bottling "
                 "plant"),
    ("moulding", "add rhythmic clicking of pick-and-place robots and mould clamps in a plastics factory"),
    ("moulding", "add fast repetitive clicking of packaging machines sealing cartons on a production line"),
    ("moulding", "add regular mechanical clatter of bottle capping machines in a beverage plant"),
    ("moulding", "add busy clicking and tapping of automated assembly stations in an electronics factory"),
    ("woodworking", "add steady whirring of planers and jointers smoothing boards in a carpentry workshop"),
    ("woodworking", "add rising and falling whine of routers carving furniture parts in a joinery"),
    ("woodworking", "add continuous whirring of lathes turning wooden table legs in a furniture factory"),
    ("woodworking", "add droning of dust extraction fans and sanders in a sawmill"),
    ("woodworking", "add repeated buzzing of chop saws cutting timber battens in a lumber yard"),
    ("pneumatic", "add loud bursts of impact wrenches tightening wheel nuts on a vehicle assembly line"),
    ("pneumatic", "add constant hissing of compressed air lines and blow guns in a machine shop"),
    ("pneumatic", "add rapid rattling of pneumatic riveting guns joining aircraft panels in a hangar"),
    ("pneumatic", "add steady hum of air compressors with intermittent release valves in a factory basement"),
    ("pneumatic", "add sharp hissing and clacking of pneumatic actuators on a bottling line"),
))

EXTENDED = TABLE_1 + MORE
LIBRARIES = {"paper": TABLE_1, "extended": EXTENDED}  # `augment.prompts` names one of these, or a file


@dataclass
class PromptOptions(Section):
    """The option of every prompt-driven augmenter."""

    section = "augment"
    prompts: str = doc_field("Prompt library: 'paper' (Table 1's six), 'extended' (Table 1 and rcmae's 30 more) or "
                             "a text file, one prompt per line ('family: prompt' or prompt).", "extended")


def load_prompts(spec: str = "extended") -> tuple[Prompt, ...]:
    """`paper` (Table 1's six prompts), `extended` (Table 1 and rcmae's 30 more), or the prompts of a text
    file: one per line, `family: text` or plain text (family 'custom'); blank lines and # lines are ignored."""
    if spec in LIBRARIES:
        return LIBRARIES[spec]
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"{path}: prompt file not found")
    prompts = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        family, sep, text = line.partition(":")
        if sep and family.strip() in FAMILIES:
            prompts.append(Prompt(family.strip(), text.strip()))
        else:
            prompts.append(Prompt("custom", line))
    if not prompts:
        raise ConfigError(f"{path}: no prompts in the file")
    return tuple(prompts)


def pick(prompts: tuple[Prompt, ...], rng: np.random.Generator) -> Prompt:
    return prompts[int(rng.integers(len(prompts)))]
