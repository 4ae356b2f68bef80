"""Does the coupling shape the chain? Phase correlation at 1, 2, 4, 8 px and R(t) along the forward chain, per regime.

    python bench/synchrony.py [--data fingerprints textures] [--regimes none global local local:k3:ref0.5 ...]
                              [--images 64] [--size 32] [--steps 100] [--seed 0]
                              [--out bench/results/synchrony.json] [--figure bench/results/synchrony.png]

For each data set, takes held-out crops (``open_image_source(..., split="val")``, grey, --size px), encodes them
with the process's image encoding (KuramotoConfig's default phase range, 0.5π) and runs the forward chain of every
regime from the same crops with the same noise seed. At every step it records the mean over images of
cos(θ_p − θ_q) for pixels d = 1, 2, 4, 8 px apart, vertically and horizontally (``circular.phase_correlation``),
and the order parameter R of each image (mean and spread). Prints a table at t = T/4, T/2 and T (the correlation
averaged over the two axes; d1 − d8 at T with twice its standard error over images), writes every curve to the JSON and draws them (one row per data set: d1, d8,
d1 − d8 and R against t).

A regime is written ``COUPLING[:OPTION...]`` with COUPLING global, local or none and the options
``k<scale>`` (the coupling range times scale), ``kconst`` (K = the range's top every step), ``unit`` (the
unit-modulus coupling sin(arg m − θ)) and ``ref<κ>`` (κ_ref), e.g. ``local:k10:ref0.15``. The default set spans
no coupling, global, local, local with K × 3 and κ_ref 0.5, local with K × 10 and κ_ref 0.15, constant K = 0.03
(local and global) and the unit-modulus local coupling. docs/synchrony.md says what the table shows.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import torch

from common import RESULTS, print_table, write_json
from kuramoto_diffusion.codecs import ImageCodec
from kuramoto_diffusion.data import open_image_source
from kuramoto_diffusion.errors import UserError
from kuramoto_diffusion.metrics.synchrony import forward_synchrony
from kuramoto_diffusion.processes import KuramotoConfig, KuramotoProcess
from kuramoto_diffusion.serialization import config_to_dict

DEFAULT_REGIMES = (
    "none",
    "global",
    "local",
    "local:k3:ref0.5",
    "local:k10:ref0.15",
    "local:kconst",
    "global:kconst",
    "local:unit",
)
DISTANCES = (1, 2, 4, 8)


def regime_config(spec: str, steps: int) -> KuramotoConfig:
    """The KuramotoConfig a regime spec names (see the module docstring)."""
    coupling, *options = spec.split(":")
    base = KuramotoConfig()
    settings: dict[str, object] = {"coupling": coupling, "steps": steps}
    for option in options:
        try:
            if option == "kconst":
                settings["coupling_shape"] = "constant"
            elif option == "unit":
                settings["coupling_norm"] = "unit"
            elif option.startswith("ref"):
                settings["ref_strength"] = float(option[3:])
            elif option.startswith("k"):
                scale = float(option[1:])
                settings["coupling_range"] = tuple(scale * k for k in base.coupling_range)
            else:
                raise ValueError
        except ValueError:
            raise UserError(
                f"regime {spec!r}: unknown option {option!r}; use k<scale>, kconst, unit or ref<κ>"
            ) from None
    return KuramotoConfig(**settings)


def curves(data: str, spec: str, crops: torch.Tensor, steps: int, seed: int) -> dict[str, object]:
    process = KuramotoProcess(regime_config(spec, steps))
    theta0 = ImageCodec.for_process(process).encode(crops.to(torch.float64))
    stats = forward_synchrony(
        process, theta0, range(steps + 1), DISTANCES, generator=torch.Generator().manual_seed(seed)
    )

    def listed(values: torch.Tensor) -> list[float]:
        return [round(v, 5) for v in values.tolist()]  # 5 decimals: far below the sampling error

    return {
        "data": data,
        "regime": spec,
        "config": config_to_dict(process.config),
        "images": len(crops),
        "t": list(stats.times),
        "vertical": {str(d): listed(stats.correlation[:, i, 0]) for i, d in enumerate(DISTANCES)},
        "horizontal": {str(d): listed(stats.correlation[:, i, 1]) for i, d in enumerate(DISTANCES)},
        "d1_minus_d8_spread": listed(stats.gap_spread),
        "R": listed(stats.order),
        "R_spread": listed(stats.order_spread),
    }


def both_axes(row: dict[str, object], distance: int, t: int) -> float:
    return 0.5 * (row["vertical"][str(distance)][t] + row["horizontal"][str(distance)][t])


def table_rows(rows: list[dict[str, object]], steps: int) -> list[dict[str, object]]:
    out = []
    for row in rows:
        line = {"data": row["data"], "regime": row["regime"]}
        for t in (steps // 4, steps // 2, steps):
            line[f"t={t} d1/2/4/8"] = " / ".join(f"{both_axes(row, d, t):.3f}" for d in DISTANCES)
        gap = both_axes(row, 1, steps) - both_axes(row, 8, steps)
        line["d1 − d8 at T ± 2 SE"] = f"{gap:+.3f} ± {2 * row['d1_minus_d8_spread'][steps] / row['images'] ** 0.5:.3f}"
        line["R(T) ± spread"] = f"{row['R'][steps]:.2f} ± {row['R_spread'][steps]:.2f}"
        out.append(line)
    return out


def figure(rows: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datas = list(dict.fromkeys(row["data"] for row in rows))
    panels = (
        ("d = 1 px", lambda r, t: both_axes(r, 1, t)),
        ("d = 8 px", lambda r, t: both_axes(r, 8, t)),
        ("d1 − d8", lambda r, t: both_axes(r, 1, t) - both_axes(r, 8, t)),
        ("order parameter R", None),
    )
    fig, axes = plt.subplots(len(datas), len(panels), figsize=(4 * len(panels), 3.2 * len(datas)), squeeze=False)
    for row_index, data in enumerate(datas):
        for column, (title, value) in enumerate(panels):
            axis = axes[row_index, column]
            for index, row in enumerate(r for r in rows if r["data"] == data):
                style = "-" if index < 10 else "--"
                ys = row["R"] if value is None else [value(row, t) for t in row["t"]]
                axis.plot(row["t"], ys, style, color=f"C{index % 10}", label=row["regime"], linewidth=1.2)
            axis.set_title(f"{data}: {title}" + ("" if value is None else ", mean cos Δθ"), fontsize=9)
            axis.set_xlabel("forward step t")
            axis.grid(alpha=0.3)
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=["fingerprints", "textures"])
    parser.add_argument("--regimes", nargs="+", default=list(DEFAULT_REGIMES))
    parser.add_argument("--images", type=int, default=64, help="held-out crops per data set")
    parser.add_argument("--size", type=int, default=32, help="crop side (px)")
    parser.add_argument("--steps", type=int, default=100, help="T")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "synchrony.json")
    parser.add_argument("--figure", type=Path, default=RESULTS / "synchrony.png")
    args = parser.parse_args()
    for spec in args.regimes:
        regime_config(spec, args.steps)  # bad specs fail before any work
    torch.set_grad_enabled(False)
    rows = []
    for data in args.data:
        source = open_image_source(data, args.size, channels=1, split="val", seed=args.seed)
        crops = source.sample_batch(args.images, torch.Generator().manual_seed(50_000 + args.seed))
        for spec in args.regimes:
            rows.append(curves(Path(data).name, spec, crops, args.steps, args.seed + 1))
    print_table(table_rows(rows, args.steps), list(table_rows(rows[:1], args.steps)[0]))
    write_json(
        args.out,
        {
            "command": shlex.join(["python", "bench/synchrony.py", *sys.argv[1:]]),
            "settings": {k: v for k, v in vars(args).items() if k not in ("out", "figure")},
            "distances": list(DISTANCES),
            "rows": rows,
        },
    )
    figure(rows, args.figure)


if __name__ == "__main__":
    main()
