"""The package's layering, checked on its source: no import cycles (imports inside functions count), argparse
only in the app, no command-line flag in a library error, and a light ``DiffusionModel`` import."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import subprocess
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import kuramoto_diffusion
from kuramoto_diffusion.app.cli import build_parser, flags_for_parameters, parameter_flags
from kuramoto_diffusion.serialization import field_choices

PACKAGE = Path(kuramoto_diffusion.__file__).parent
NAME = "kuramoto_diffusion"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the nodes under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            skipped.update(id(child) for statement in node.body for child in ast.walk(statement))
    return skipped


def imported_modules(name: str) -> set[str]:
    """The package modules ``name`` imports anywhere in its source (a submodule named in ``from X import y`` is
    X.y; importing X.y also runs the __init__ of every package above it)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = type_checking_blocks(tree)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        for target in targets:
            parts = target.split(".")
            for length in range(1, len(parts) + 1):
                candidate = ".".join(parts[:length])
                # The packages above the importing module are already being imported when it runs.
                if candidate in MODULES and candidate != name and not name.startswith(candidate + "."):
                    found.add(candidate)
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in graph[node]:
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return components


def test_the_package_has_no_import_cycles():
    graph = {name: imported_modules(name) for name in MODULES}
    assert f"{NAME}.model" in graph[f"{NAME}.app.train"]  # the walk sees imports at all
    assert strongly_connected(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_inside_functions_count():
    # cli imports its subcommand modules only when a command runs.
    assert f"{NAME}.app.train" in imported_modules(f"{NAME}.app.cli")


def test_argparse_is_imported_by_the_app_alone():
    importing = sorted(
        name
        for name, path in MODULES.items()
        if any(
            isinstance(node, (ast.Import, ast.ImportFrom))
            and any(alias.name == "argparse" for alias in node.names)
            or getattr(node, "module", None) == "argparse"
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        )
    )
    assert importing and all(name.startswith(f"{NAME}.app.") for name in importing), importing


def error_texts(tree: ast.AST) -> list[str]:
    """The string pieces of every ``raise`` and ``warnings.warn(...)`` in a module."""
    texts = []
    for node in ast.walk(tree):
        is_warning = isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "warn"
        if isinstance(node, ast.Raise) or is_warning:
            texts += [
                piece.value
                for piece in ast.walk(node)
                if isinstance(piece, ast.Constant) and isinstance(piece.value, str)
            ]
    return texts


def test_no_library_error_names_a_command_line_flag():
    import re

    flag = re.compile(r"(?<![\w-])--[a-z]")
    offending = {
        name: [text for text in error_texts(ast.parse(path.read_text(encoding="utf-8"))) if flag.search(text)]
        for name, path in MODULES.items()
        if not name.startswith(f"{NAME}.app")
    }
    assert {name: texts for name, texts in offending.items() if texts} == {}
    # and the check does see flags where the app names them
    app_texts = error_texts(ast.parse(MODULES[f"{NAME}.app.train"].read_text(encoding="utf-8")))
    assert any(flag.search(text) for text in app_texts)


def test_the_app_says_library_parameters_as_flags():
    parser = build_parser()
    train = parameter_flags(parser, "train")
    assert (
        flags_for_parameters("pass resume=True or choose another run_dir", train)
        == "pass --resume or choose another --out"
    )
    assert flags_for_parameters("use image_size=8 or more", train) == "use --image-size 8 or more"
    assert (
        flags_for_parameters("batch_size 33 does not split × grad_accum 2", train)
        == "--batch-size 33 does not split × --grad-accum 2"
    )
    # single words are prose unless written name=value; a flag of the command itself wins over another's
    assert flags_for_parameters("the num of images", train) == "the num of images"
    assert (
        flags_for_parameters("choose another out_dir", parameter_flags(parser, "sample")) == "choose another --out-dir"
    )
    assert flags_for_parameters("choose another out_dir", parameter_flags(parser, "flows")) == "choose another --out"


def test_loading_a_model_imports_no_image_or_plotting_library():
    code = (
        "import sys; from kuramoto_diffusion.model import DiffusionModel; "
        "print(' '.join(m for m in ('skimage', 'matplotlib', 'PIL') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []
    # the same probe does see a heavy import
    code_heavy = code.replace(
        "from kuramoto_diffusion.model import DiffusionModel", "import kuramoto_diffusion.viz.images"
    )
    assert (
        "PIL"
        in subprocess.run([sys.executable, "-c", code_heavy], capture_output=True, text=True, check=True).stdout.split()
    )


def test_request_defaults_are_the_command_lines():
    import argparse
    import dataclasses

    from kuramoto_diffusion.app.evaluate import EvaluateRequest
    from kuramoto_diffusion.app.forward import ForwardRequest
    from kuramoto_diffusion.app.sample import SampleRequest, SamplerOptions
    from kuramoto_diffusion.app.train import TrainRequest

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command, request in [
        ("forward", ForwardRequest),
        ("train", TrainRequest),
        ("sample", SampleRequest),
        ("evaluate", EvaluateRequest),
    ]:
        defaults = {action.dest: action.default for action in subcommands[command]._actions}
        for option in dataclasses.fields(request):
            if option.default_factory is SamplerOptions:
                for nested in dataclasses.fields(SamplerOptions):
                    assert defaults[nested.name] == nested.default, (command, nested.name)
            elif option.name == "given":  # which options were typed: main() records it, it is not an option
                assert option.default == frozenset()
            elif option.default is not dataclasses.MISSING:
                assert defaults[option.name] == option.default, (command, option.name)


# ----- the reverse-step registry (sampling/steps.py) -----------------------------------------
def sampler_name_comparisons(source: str, names: set[str]) -> list[int]:
    """Lines of ``source`` that compare a value with a sampler name as a string: ``x == "pc"``, ``x in ("sde", …)``,
    ``case "ode":``."""

    def literals(node: ast.AST) -> set[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return {node.value}
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return {
                element.value
                for element in node.elts
                if isinstance(element, ast.Constant) and isinstance(element.value, str)
            }
        return set()

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            compared = set().union(*(literals(operand) for operand in [node.left, *node.comparators]))
        elif isinstance(node, ast.MatchValue):
            compared = literals(node.value)
        else:
            continue
        if compared & names:
            lines.append(node.lineno)
    return lines


def test_the_sampler_name_check_finds_comparisons():
    names = {"sde", "pc"}
    source = 'a = x == "pc"\nb = x in ("sde", "ode")\nmatch x:\n    case "sde":\n        pass\nc = f(sampler="sde")\nd = x == "ode"\n'
    assert sampler_name_comparisons(source, names) == [1, 2, 4]


def test_no_sampler_name_is_compared_as_a_string_outside_the_registry():
    from kuramoto_diffusion.sampling.steps import REVERSE_STEPS

    registry = MODULES[f"{NAME}.sampling.steps"]
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{line}"
        for path in MODULES.values()
        if path != registry
        for line in sampler_name_comparisons(path.read_text(encoding="utf-8"), set(REVERSE_STEPS))
    ]
    assert not found, f"sampler names compared outside sampling/steps.py (ask the registry entry instead): {found}"


def test_a_new_sampler_is_one_function_and_one_registry_line(monkeypatch):
    """A toy step registered at run time samples through DiffusionModel.sample, DiffusionScheduler.step and the CLI."""
    import torch

    from kuramoto_diffusion.config import image_model_config
    from kuramoto_diffusion.model import DiffusionModel
    from kuramoto_diffusion.processes import KuramotoConfig
    from kuramoto_diffusion.sampling.scheduler import DiffusionScheduler
    from kuramoto_diffusion.sampling.steps import REVERSE_STEPS, ReverseStep
    from kuramoto_diffusion.sampling.sweep import sweep_grid

    def noiseless(process, score_fn, x, upper, lower, sampler, generator):  # noqa: ANN001, ARG001 - the StepFunction shape
        """The reverse SDE's mean step, without its noise."""
        return process.reverse_sde_mean(x, score_fn(x, upper), lower, upper - lower), 1

    monkeypatch.setitem(REVERSE_STEPS, "toy-noiseless", ReverseStep(noiseless, stepwise=True))  # the one registry line

    torch.manual_seed(0)
    process_config = KuramotoConfig(coupling="local", neighbourhood=3, steps=10)
    model = DiffusionModel(image_model_config(process_config, 1, 8, "tiny"))
    model.network.eval()
    x_start = model.process.prior_sample((2, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    result = model.sample(2, sampler="toy-noiseless", nfe=4, x_start=x_start)

    grid = sweep_grid(model.process, "toy-noiseless", 4)
    assert result.steps == grid and result.function_evaluations == len(grid) - 1 == 4
    expected = x_start
    with torch.no_grad():
        for upper, lower in zip(grid[:-1], grid[1:]):
            expected = model.process.reverse_sde_mean(expected, model.score(expected, upper), lower, upper - lower)
    assert torch.equal(result.states, expected)

    scheduler = DiffusionScheduler(process_config, sampler="toy-noiseless")
    scheduler.set_timesteps(4)
    x = x_start
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model.network(x, scheduler.network_time(t, x)), t, x).prev_sample
    assert torch.equal(x, expected)

    arguments = build_parser().parse_args(["sample", "--checkpoint", "model.safetensors", "--sampler", "toy-noiseless"])
    assert arguments.sampler == "toy-noiseless"


# ----- choices: written once, as Literal[...] fields of the configs ------------------------------
def option_disagreements(
    command: argparse.ArgumentParser,
    request: type,
    config_fields: Callable[[str], tuple[type, str] | None],
    as_field: Callable[[str, object], object] = lambda option, value: value,
    own_choices: Mapping[str, Collection[str]] = {},
    default_exceptions: Collection[str] = (),
) -> list[str]:
    """What a subcommand's options and the config fields they set disagree on: each request field is an option of
    its name (``--name-with-dashes``) with the request's default, the default of the field ``config_fields`` names
    (``as_field`` turns the option's value into the field's; a None request default is decided later, by the data)
    and the field's Literal choices; an option with choices and no Literal field offers ``own_choices``."""
    actions = {action.dest: action for action in command._actions}
    found = []
    for option in dataclasses.fields(request):
        if option.name == "given":
            continue
        action = actions.get(option.name)
        if action is None or "--" + option.name.replace("_", "-") not in action.option_strings:
            found.append(f"{option.name}: no option --{option.name.replace('_', '-')}")
            continue
        if option.default is not dataclasses.MISSING and action.default != option.default:
            found.append(
                f"{option.name}: the option's default {action.default!r} is not the request's {option.default!r}"
            )
        target = config_fields(option.name)
        if target is not None and option.name not in default_exceptions and option.default is not None:
            cls, name = target
            field_default = next(f.default for f in dataclasses.fields(cls) if f.name == name)
            if field_default != as_field(option.name, option.default):
                found.append(
                    f"{option.name}: default {option.default!r}, but {cls.__name__}.{name} defaults to {field_default!r}"
                )
        try:
            choices = field_choices(*target) if target is not None else None
        except TypeError:  # not a Literal field
            choices = None
        if choices is not None:
            if tuple(action.choices or ()) != choices:
                found.append(
                    f"{option.name}: choices {action.choices}, but {target[0].__name__}.{target[1]} takes {choices}"
                )
            try:
                request_choices = field_choices(request, option.name)
            except TypeError:
                request_choices = None
            if request_choices != choices:
                found.append(
                    f"{option.name}: {request.__name__}.{option.name} is not typed as {target[0].__name__}.{target[1]}"
                )
        elif action.choices is not None and tuple(action.choices) != tuple(own_choices.get(option.name, ())):
            found.append(f"{option.name}: choices {action.choices} come from no config field or registry")
    return found


def _config_field(classes: Sequence[type], renamed: Mapping[str, str] = {}) -> Callable[[str], tuple[type, str] | None]:
    def lookup(option: str) -> tuple[type, str] | None:
        for cls in classes:
            name = renamed.get(option, option) if cls is classes[0] else option
            if name in {f.name for f in dataclasses.fields(cls)}:
                return cls, name
        return None

    return lookup


def test_each_option_agrees_with_its_config_field_in_name_default_and_choices():
    from kuramoto_diffusion.app.cli import CHANNEL_NAMES, DEVICE_NAMES
    from kuramoto_diffusion.app.forward import ForwardRequest
    from kuramoto_diffusion.app.train import TRAIN_OPTION_FIELDS, TrainRequest, train_option_value
    from kuramoto_diffusion.config import DataConfig, ModelConfig, TrainConfig
    from kuramoto_diffusion.nets import UNET_PRESETS
    from kuramoto_diffusion.processes import PROCESS_NAMES, KuramotoConfig

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    own = {"process": PROCESS_NAMES, "preset": tuple(UNET_PRESETS), "channels": CHANNEL_NAMES, "device": DEVICE_NAMES}
    train_fields = _config_field([TrainConfig, DataConfig, ModelConfig, KuramotoConfig], TRAIN_OPTION_FIELDS)
    # --channels: "auto" (from the data) where the field holds the number
    assert (
        option_disagreements(subcommands["train"], TrainRequest, train_fields, train_option_value, own, {"channels"})
        == []
    )
    assert (
        option_disagreements(subcommands["forward"], ForwardRequest, _config_field([DataConfig, KuramotoConfig])) == []
    )
    # Every TrainConfig field is an option's (of its own name unless renamed), but for these, which no option sets.
    without_option = {f.name for f in dataclasses.fields(TrainConfig)} - set(TRAIN_OPTION_FIELDS.values())
    assert without_option == {"weight_decay", "grad_clip", "log_every"}


def test_the_option_check_finds_disagreements():
    from kuramoto_diffusion.config import TrainConfig

    @dataclasses.dataclass(frozen=True)
    class Request:
        precision: str = "fp32"
        objective: str = "auto"
        window: int = 0
        lr: float = 1e-3  # another default than the config field's

    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32"
    )  # a choice missing, the request untyped
    parser.add_argument("--objective-name", dest="objective", default="auto")  # another name
    parser.add_argument("--window", type=int, default=1)  # another default than the request's
    parser.add_argument("--lr", type=float, default=1e-3)
    found = option_disagreements(parser, Request, _config_field([TrainConfig]))
    assert [line.split(":")[0] for line in found] == ["precision", "precision", "objective", "window", "lr"], found


def imported_names(name: str, module: str) -> set[str]:
    """The names module ``name`` imports from package module ``module`` (``from module import a, b``)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            source = ".".join(base + ([node.module] if node.module else []))
            if source == module:
                found.update(alias.name for alias in node.names)
    return found


def test_the_trainer_knows_objectives_only_through_their_interface():
    # The trainer builds an objective and calls examples() and loss(): no kernel, draw or pool internals.
    objectives = f"{NAME}.training.objectives"
    trainer = f"{NAME}.training.trainer"
    assert not any(module.startswith(objectives + ".") for module in imported_modules(trainer))
    assert imported_names(trainer, objectives) <= {"Conditioning", "Objective", "build_objective", "resolve_objective"}
    assert imported_names(trainer, objectives)  # the check sees the import at all
    # The chain pool carries whatever step it is given; it imports no objective.
    assert not any(module.startswith(objectives) for module in imported_modules(f"{NAME}.training.chain_pool"))


def test_the_loss_and_the_objectives_calls_take_few_parameters():
    import inspect

    from kuramoto_diffusion.training.objectives import Objective, dsm_loss

    for function in (dsm_loss, Objective.loss, Objective.examples):
        assert len(inspect.signature(function).parameters) <= 6, function.__qualname__


def test_data_become_states_in_the_codecs_alone_and_processes_declare_their_phases():
    # A process knows its states only: no ForwardProcess defines encode or decode, and codecs.py reads no config
    # (build_codec is model.py's). Which channels are phases is each process's declaration, not a kind-keyed table.
    from kuramoto_diffusion.processes import PROCESS_CLASSES, ForwardProcess

    assert not hasattr(ForwardProcess, "encode") and not hasattr(ForwardProcess, "decode")
    for kind, process_class in PROCESS_CLASSES.items():
        assert not hasattr(process_class, "encode") and not hasattr(process_class, "decode"), kind
        assert "periodic_channels" in vars(process_class), f"the {kind} process does not declare its periodic channels"
    codecs = ast.parse(MODULES[f"{NAME}.codecs"].read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(codecs) if isinstance(node, ast.ImportFrom)}
    assert "config" not in imported and imported & {"circular", "errors"}, imported


def test_the_trainer_and_checkpoints_read_config_files_without_the_model_facade():
    for name in (f"{NAME}.training.trainer", f"{NAME}.training.checkpointing"):
        tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
        from_model = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "model"
            for alias in node.names
        }
        assert not from_model & {
            "CONFIG_NAME",
            "WEIGHTS_NAME",
            "EMA_WEIGHTS_NAME",
            "load_run_config",
            "run_config_dict",
        }, name
