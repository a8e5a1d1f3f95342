"""How the code is laid out: recipes as files, portable adapter records, each option defined once, imports
pointing one way (floor by floor: training <- inference <- evaluation <- webapp and serving <- app, benchmarks,
scripts, tests; the library below the command lines), one import path for each name, and no script editing sys.path."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shlex

import pytest

from tests.conftest import SHIPPED_MODEL_DIR
from training.config import TrainConfig, build_parser, parse_args, portable_settings
from training.errors import DataError
from training.paths import PROJECT_ROOT

RECIPE = "training/recipes/minilm-imdb.json"
PACKAGES = ("training", "evaluation", "inference")
# The floors, lowest first: a module imports only from its own floor or the ones below it.
FLOORS = (
    ("training",),
    ("inference",),
    ("evaluation",),
    ("webapp", "serving"),
    ("app", "benchmarks", "scripts", "tests"),
)
LIBRARY_FOLDERS = ("training", "inference", "evaluation", "webapp", "serving")
SHARED_OPTIONS = ("--model", "--split", "--device", "--batch-size", "--precision", "--trust-pickle-weights")


def module_file(module: str):
    path = PROJECT_ROOT / (module.replace(".", "/") + ".py")
    return path if path.is_file() else None


def all_modules() -> list[str]:
    """Every project module: the library folders, app.py, benchmarks, scripts and tests."""
    paths = [PROJECT_ROOT / "app.py"]
    for folder in (*LIBRARY_FOLDERS, "benchmarks", "scripts", "tests"):
        paths += sorted((PROJECT_ROOT / folder).glob("*.py"))
    return [".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts) for path in paths]


def floor(module: str) -> int:
    return next(level for level, roots in enumerate(FLOORS) if module.split(".")[0] in roots)


def is_command_line(module: str) -> bool:
    """A module run as a command (`if __name__ == "__main__":`): the library beneath must not import it."""
    return 'if __name__ == "__main__":' in module_file(module).read_text()


def project_imports(module: str) -> set[str]:
    """Every project module `module` imports, at the top or inside a function."""
    tree = ast.parse(module_file(module).read_text())
    roots = {root for roots in FLOORS for root in roots}
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {name for name in names if name.split(".")[0] in roots and module_file(name)}
    return found - {module}


def defined_names(module: str) -> set[str]:
    """The names `module` defines at its top level (functions, classes, assignments), not those it imports."""
    names = set()
    for node in ast.parse(module_file(module).read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            targets = [item for target in node.targets for item in getattr(target, "elts", [target])]
            names |= {target.id for target in targets if isinstance(target, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


# ----------------------------------------------------------------------------- recipes


def test_command_line_options_override_the_recipe_and_only_those():
    config = parse_args(["--recipe", RECIPE, "--epochs", "1", "--max-length", "256"])
    assert (config.epochs, config.max_length) == (1.0, 256)  # 256 is also TrainConfig's default: given, so it wins
    assert (config.lora_rank, config.lora_alpha, config.learning_rate, config.base_model) == (32, 64, 4e-4, "minilm")
    assert parse_args([]) == TrainConfig()
    by_name = parse_args(["--recipe", "minilm-imdb"])  # a bare name finds the checked-in recipe
    assert dataclasses.replace(by_name, recipe=RECIPE) == parse_args(["--recipe", RECIPE])


def test_the_recipe_holds_the_settings_the_shipped_adapters_run_recorded():
    # Compared with what the run itself wrote (its record as committed with the adapter, e295b57), never with
    # the fields filled in later: those were written to match the recipe, so they could not disagree with it.
    shipped = json.loads((SHIPPED_MODEL_DIR / "sentiment_config.json").read_text())
    as_run = dict(shipped["training"])
    later = as_run.pop("filled_in_later")
    # Where the run read and wrote (a GPU machine's folders) and how it was started are not settings a recipe holds.
    for key in ("data", "output_dir", "results_dir", "command"):
        as_run.pop(key)
    assert set(later) >= {"note", "data", "recipe"} and not set(later) & set(as_run)
    recipe = dataclasses.asdict(parse_args(["--recipe", str(PROJECT_ROOT / RECIPE)]))
    assert {key: recipe[key] for key in as_run} == as_run
    assert (recipe["max_length"], recipe["truncation"]) == (shipped["max_length"], shipped["truncation"])
    assert parse_args(["--recipe", RECIPE]).lora_settings().__dict__ == shipped["lora"]


def test_a_run_of_the_recipe_records_the_recipes_settings_and_its_command(
    tiny_distilbert, small_imdb, tmp_path, monkeypatch
):
    # A fresh (tiny) run of the recipe: its record holds every recipe setting the command line did not override,
    # and the command it records rebuilds the same run.
    from training.train import main

    monkeypatch.chdir(PROJECT_ROOT)  # recorded paths are relative to the root, as the command is run from there
    overrides = [
        *("--base-model", str(tiny_distilbert), "--data", str(small_imdb), "--report-to", "none"),
        *("--output-dir", str(tmp_path / "adapter"), "--results-dir", str(tmp_path / "results")),
        *("--max-length", "64", "--epochs", "1", "--train-limit", "64", "--validation-limit", "32"),
        *("--batch-size", "16", "--eval-batch-size", "32", "--lora-rank", "4", "--lora-alpha", "8"),
    ]
    config = parse_args(["--recipe", RECIPE, *overrides])
    main(config)
    record = json.loads((tmp_path / "adapter" / "sentiment_config.json").read_text())["training"]
    recipe = json.loads((PROJECT_ROOT / RECIPE).read_text())
    overridden = {option.removeprefix("--").replace("-", "_") for option in overrides[::2]}
    assert {key: record[key] for key in recipe.keys() - overridden - {"_comment"}} == {
        key: value for key, value in recipe.items() if key not in overridden | {"_comment"}
    }
    assert record["recipe"] == RECIPE and "filled_in_later" not in record
    rerun = parse_args(shlex.split(record["command"])[2:])
    assert portable_settings(rerun) == {key: value for key, value in record.items() if key != "command"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"lora_rank": "32", "colour": 1}', "unknown setting 'colour'; lora_rank must be int"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_a_bad_recipe_is_refused_in_one_message(tmp_path, content, message):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(content)
    with pytest.raises(DataError, match=re.escape(message)):
        parse_args(["--recipe", str(recipe)])
    with pytest.raises(DataError, match="no such file"):
        parse_args(["--recipe", str(tmp_path / "missing.json")])


def test_the_adapter_record_holds_no_machine_paths(tiny_adapter):
    record = json.loads((tiny_adapter / "sentiment_config.json").read_text())["training"]
    for key in ("data", "base_model", "output_dir", "results_dir"):
        assert not record[key].startswith(("/", "~")), (key, record[key])
    assert (record["output_dir"], record["results_dir"]) == ("adapter", "results")  # temp folders: by name only
    assert record["command"].startswith("python training/train.py ") and str(PROJECT_ROOT) not in record["command"]
    # The data is recorded relative to the project root, where evaluation/calibrate.py finds it again.
    assert (PROJECT_ROOT / record["data"] / "train.parquet").exists()
    metrics = json.loads((tiny_adapter / "metrics.json").read_text())
    assert metrics["training"]["output_dir"] == "adapter"


def test_a_recorded_path_keeps_the_symbolic_links_the_user_gave(tmp_path):
    from training.config import portable_path

    (tmp_path / "elsewhere" / "imdb").mkdir(parents=True)
    (tmp_path / "shared").symlink_to(tmp_path / "elsewhere")
    recorded = portable_path(tmp_path / "shared" / "imdb")
    assert recorded.endswith("shared/imdb") and "elsewhere" not in recorded
    assert (PROJECT_ROOT / recorded).resolve() == (tmp_path / "elsewhere" / "imdb").resolve()


# ----------------------------------------------------------------------------- options


def test_train_options_are_generated_from_the_config_fields():
    fields = dataclasses.fields(TrainConfig)
    assert all(field.metadata.get("help") for field in fields)
    flags = {option for action in build_parser()._actions for option in action.option_strings}
    assert {"--recipe", "--base-model", "--lora-rank", "--no-length-grouping", "--resume"} <= flags
    assert len(flags) == len(fields) + 2  # one flag per field, plus -h/--help
    assert parse_args(["--no-length-grouping", "--resume"]).group_by_length is False


def test_each_shared_option_is_defined_once():
    for option in SHARED_OPTIONS:
        defined_in = [
            str(path.relative_to(PROJECT_ROOT))
            for package in PACKAGES
            for path in (PROJECT_ROOT / package).glob("*.py")
            if re.search(rf"add_argument\(\s*\"{option}\"", path.read_text())
        ]
        assert defined_in == ["inference/options.py"], (option, defined_in)


@pytest.mark.parametrize("module", ["evaluation.calibrate", "evaluation.long_reviews"])
def test_every_command_checks_batch_size_the_same_way(module, capsys):
    import importlib

    with pytest.raises(SystemExit):
        importlib.import_module(module).parse_args(["--batch-size", "0"])
    assert "--batch-size: must be a whole number of at least 1, not '0'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- imports


def test_pure_metrics_import_nothing_of_the_project():
    assert project_imports("training.metrics") == set()


def test_imports_point_down_the_floors_and_never_up():
    upward = [
        (module, imported)
        for module in all_modules()
        for imported in project_imports(module)
        if floor(imported) > floor(module)
    ]
    assert upward == []


def test_the_library_imports_no_command_line_and_no_command_line_imports_another():
    library = [module for module in all_modules() if module.split(".")[0] in LIBRARY_FOLDERS]
    commands = {module for module in library if is_command_line(module)}
    assert {"training.train", "inference.predict", "evaluation.evaluate"} <= commands  # the check finds them
    offending = [
        (module, imported) for module in library for imported in project_imports(module) if imported in commands
    ]
    assert offending == []


def test_the_import_graph_has_no_cycle():
    graph = {module: project_imports(module) for module in all_modules()}
    done, on_path = set(), []

    def visit(module: str) -> None:
        if module in on_path:
            pytest.fail("import cycle: " + " -> ".join([*on_path[on_path.index(module) :], module]))
        if module in done:
            return
        on_path.append(module)
        for imported in sorted(graph.get(module, ())):
            visit(imported)
        on_path.pop()
        done.add(module)

    for module in graph:
        visit(module)


def test_each_name_has_one_import_path():
    """`from project.module import name` names the module that defines `name`: no re-exports."""
    roots = {root for roots in FLOORS for root in roots}
    second_paths = []
    for module in all_modules():
        for node in ast.walk(ast.parse(module_file(module).read_text())):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in roots):
                continue
            if module_file(node.module) is None:  # a package: `from training import model` imports a module
                continue
            defined = defined_names(node.module)
            second_paths += [
                (module, f"{node.module}.{alias.name}") for alias in node.names if alias.name not in defined
            ]
    assert second_paths == []


def test_each_file_holds_one_job_at_a_readable_size():
    """The library's files, the page and the benchmark runner stay small enough to read top to bottom."""
    limits = {path: 450 for folder in LIBRARY_FOLDERS for path in (PROJECT_ROOT / folder).glob("*.py")}
    limits[PROJECT_ROOT / "app.py"] = 450
    limits[PROJECT_ROOT / "benchmarks" / "benchmark.py"] = 400
    too_long = {
        str(path.relative_to(PROJECT_ROOT)): lines
        for path, limit in limits.items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > limit
    }
    assert too_long == {}


def test_nothing_edits_sys_path():
    for package in (*LIBRARY_FOLDERS, "scripts", "benchmarks", "tests"):
        for path in (PROJECT_ROOT / package).glob("*.py"):
            if path.name == "test_structure.py":  # names the call it looks for
                continue
            assert "sys.path.insert" not in path.read_text(), path
