"""The wizard's state without Qt: the values being edited and what the steps found out.

``WizardState.check()`` turns it into a recipe (or the errors, by field) with the core functions;
the page calls it on every change and draws the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from macfinetune.core import recommend, wizard
from macfinetune.core.formats import pairs
from macfinetune.core.modelshape import ModelShape
from macfinetune.core.recipe import Recipe, recipe_to_dict


@dataclass(frozen=True)
class DataInfo:
    """What the Data step read: row counts and token numbers (None until tokenized)."""

    source: str
    format: str
    train_rows: int
    valid_rows: int
    has_valid: bool  # the user's own validation file
    leaked_rows: int = 0
    longest_tokens: int | None = None
    mean_tokens: float | None = None
    problem: str = ""  # why the rows cannot train (shown beside the data field)
    mask_problem: str = ""  # why prompt masking cannot train these rows ('' when it can)

    def with_tokens(self, longest: int, mean: float) -> DataInfo:
        return replace(self, longest_tokens=longest, mean_tokens=mean)

    @property
    def is_pairs(self) -> bool:
        """Preference pairs (prompt, chosen, rejected): they train with DPO or ORPO."""
        return self.format.removeprefix("hf:") == "preference"


@dataclass
class WizardState:
    values: dict = field(default_factory=lambda: recipe_to_dict(Recipe()))
    shape: ModelShape | None = None
    model_problem: str = ""
    data: DataInfo | None = None
    data_busy: bool = False

    def set(self, key: str, value) -> None:
        section, _, name = key.partition(".")
        self.values.setdefault(section, {})[name] = value
        if key == "training.iterations" and value not in (None, ""):
            self.values["training"]["epochs"] = None
        elif key == "training.epochs" and value not in (None, ""):
            self.values["training"]["iterations"] = None

    def set_recipe(self, recipe: Recipe) -> None:
        self.values = recipe_to_dict(recipe)
        self.follow_data()

    def follow_data(self) -> None:
        """The objective the data allows: pairs train with DPO (or ORPO, when chosen), other data supervised."""
        if self.data is None or self.data.problem:
            return
        objective = self.values["training"].get("objective", "sft")
        if self.data.is_pairs and objective == "sft":
            self.set("training.objective", "dpo")
        elif not self.data.is_pairs and objective != "sft":
            self.set("training.objective", "sft")

    def check(self) -> tuple[Recipe | None, dict[str, str]]:
        recipe, errors = wizard.field_problems(self.values, self.shape)
        errors = dict(errors)
        errors.update(self._path_errors())
        readable = self.data is not None and not self.data.problem
        if recipe is not None and readable and self.data.train_rows < recipe.training.batch_size:
            errors.setdefault("training.batch_size", f"the training set has {self.data.train_rows} rows, fewer "
                              f"than the batch size; use at most {self.data.train_rows}")
        if self.values["data"].get("mask_prompt") in (True, "true") and self.data and self.data.mask_problem:
            errors.setdefault("data.mask_prompt", self.data.mask_problem)
        if recipe is not None and readable:
            wrong = pairs.objective_problem(recipe.training.objective, "preference" if self.data.is_pairs else
                                            "supervised rows", self.data.source)
            if wrong:
                errors.setdefault("training.objective", wrong.message)
        return recipe, errors

    def advice(self, recipe: Recipe | None) -> dict[str, str]:
        """Unusual but valid settings for this model (core.recommend.advice); none without a model."""
        if recipe is None or self.shape is None:
            return {}
        return recommend.advice(recipe, self.shape)

    def _path_errors(self) -> dict[str, str]:
        out = {}
        if not self.values["model"].get("path"):
            out["model.path"] = "choose a model"
        elif self.model_problem:
            out["model.path"] = self.model_problem
        if not self.values["data"].get("path"):
            out["data.path"] = "choose a dataset"
        elif self.data_busy:
            out["data.path"] = "the data is still being read"
        elif self.data is not None and self.data.problem:
            out["data.path"] = self.data.problem
        return out

    def with_paths(self, recipe: Recipe) -> Recipe:
        return replace(recipe, model=replace(recipe.model, path=self.values["model"]["path"]),
                       data=replace(recipe.data, path=self.values["data"]["path"]))
