"""Recipes: every setting of a fine-tuning run, as typed frozen dataclasses.

A recipe is YAML on disk (``recipes/*.yaml``, a run's ``recipe.yaml``). It is read with
``yaml.safe_load`` and converted field by field: unknown keys are rejected by name,
wrong types and out-of-range values are reported with the file, line and value.
The help text lives once, on the field, and feeds YAML comments and CLI help.

- ``schema``: the dataclasses and their help text. ``load``: reading, validating, overrides. ``dump``: writing.
"""

from macfinetune.core.recipe.dump import dump_recipe, recipe_to_dict, save_recipe
from macfinetune.core.recipe.load import (
    apply_overrides,
    check_recipe,
    load_recipe,
    parse_recipe,
    recipe_from_dict,
    with_paths,
)
from macfinetune.core.recipe.schema import (
    FOREIGN_KEYS,
    SCHEMA_VERSION,
    SECTIONS,
    DataSection,
    EvalSection,
    MethodSection,
    ModelSection,
    Recipe,
    TrainingSection,
    _section_class,
    all_keys,
    field_help,
    knob,
)

__all__ = [
    "FOREIGN_KEYS", "SCHEMA_VERSION", "SECTIONS", "DataSection", "EvalSection", "MethodSection", "ModelSection",
    "Recipe", "TrainingSection", "_section_class", "all_keys", "apply_overrides", "check_recipe", "dump_recipe",
    "field_help", "knob", "load_recipe", "parse_recipe", "recipe_from_dict", "recipe_to_dict", "save_recipe",
    "with_paths",
]
