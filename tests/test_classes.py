"""Stage 2's classes: machine IDs or attributes, chosen from the train clips, and each clip's class among them."""

import numpy as np
import pyarrow as pa
import pytest

from rcmae.data.classes import ClipClasses, chosen_class_by, class_by_of, clip_class_keys, machines_of


def clips(*rows: tuple[str, str, str]) -> pa.Table:
    machine_type, machine_id, attributes = zip(*rows)
    return pa.table({"machine_type": list(machine_type), "machine_id": list(machine_id),
                     "attributes": list(attributes)})


YEAR_2020 = clips(("fan", "00", ""), ("fan", "02", ""), ("valve", "00", ""), ("valve", "04", ""))
YEAR_2023 = clips(("fan", "00", "vel_8"), ("fan", "00", "vel_10"), ("valve", "00", "pat_01"), ("valve", "00", ""))


def test_auto_classifies_attributes_only_where_a_type_has_one_id_and_the_names_carry_attributes():
    assert chosen_class_by(YEAR_2020, "auto") == "id"
    assert chosen_class_by(YEAR_2023, "auto") == "attributes"
    assert chosen_class_by(clips(("fan", "00", ""), ("valve", "00", "")), "auto") == "id"  # nothing else to use
    assert chosen_class_by(YEAR_2023, "id") == "id" and chosen_class_by(YEAR_2020, "attributes") == "attributes"


def test_a_clip_without_attributes_keeps_its_section_as_its_class():
    keys = clip_class_keys(YEAR_2023, "attributes")
    assert keys == ["fan/00/vel_8", "fan/00/vel_10", "valve/00/pat_01", "valve/00"]
    assert clip_class_keys(YEAR_2023, "id") == ["fan/00", "fan/00", "valve/00", "valve/00"]
    assert class_by_of(sorted(keys)) == "attributes" and class_by_of(["fan/00", "valve/00"]) == "id"
    assert machines_of(keys) == ["fan/00", "valve/00"]


def test_the_true_class_log_probability_and_for_a_clip_without_a_class_its_machines_total():
    classes = ["fan/00/vel_10", "fan/00/vel_8", "valve/00/pat_01"]
    test = clips(("fan", "00", "vel_8"), ("fan", "00", ""), ("fan", "00", "vel_99"), ("valve", "00", "pat_01"))
    labelled = ClipClasses.of_table(test, classes)
    assert labelled.of_clips == ["fan/00/vel_8", None, None, "valve/00/pat_01"]
    probs = np.array([[0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.5, 0.1, 0.4], [0.1, 0.1, 0.8]])
    expected = np.log([0.7, 0.3 + 0.3, 0.5 + 0.1, 0.8])  # fan's two classes summed where the clip has none
    np.testing.assert_allclose(labelled.true_log_probs(np.log(probs)), expected)
    np.testing.assert_allclose(labelled.select(np.array([False, True, False, True])).true_log_probs(
        np.log(probs[[1, 3]])), expected[[1, 3]])


def test_machine_ids_as_classes_are_what_they_were():
    classes = ["fan/00", "fan/02", "valve/00", "valve/04"]
    labelled = ClipClasses.of_table(YEAR_2020, classes)
    assert labelled.of_clips == classes and labelled.machines == classes
    log_probs = np.log(np.full((4, 4), 0.25))
    np.testing.assert_allclose(labelled.true_log_probs(log_probs), np.log(0.25))


@pytest.mark.parametrize("choice", ["id", "attributes", "auto"])
def test_the_paper_preset_keeps_the_papers_id_classes_and_the_option_is_checked(choice):
    from rcmae.config import ConfigError, paper, tiny

    assert paper().finetune.classes == "id" and tiny().finetune.classes == "auto"
    assert tiny().override({"finetune.classes": choice}).finetune.classes == choice
    with pytest.raises(ConfigError, match="finetune.classes"):
        tiny().override({"finetune.classes": "sections"})
