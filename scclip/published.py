"""Published mIoU of every method scclip runs, per backbone, as its paper or release reports it.

The numbers are data (`scclip/data/published_miou.json`), made from the releases' settings files
(`reference/methods/settings_*.json` of the shared reference data; later releases, such as ResCLIP's
and ProxyCLIP's, in `reference/newer_methods/`, read from there or from the same folder) with

    python -m scclip.published tests/reference

so that tables of our runs can stand beside them without anyone copying numbers by hand. A record
is keyed by a method name and a backbone; `vanilla` is plain CLIP under SC-CLIP's settings (the
paper's "vanilla CLIP"), `vanilla_sclip` and `vanilla_clearclip` plain CLIP as those releases run
it (the configs of configs/vanilla_sclip/ and configs/vanilla_clearclip/ declare `published_as`).
"""
import argparse
import json
import sys
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from .benchmarks import BENCHMARKS, WITHOUT_BACKGROUND
from .errors import InputError, ScclipError
from .fileio import write_atomically

DATA_FILE = "published_miou.json"
B16, L14 = "ViT-B/16", "ViT-L/14"
H14 = "ViT-H-14:laion2b_s32b_b79k"  # open_clip's pair, as `--backbone` labels it (ProxyCLIP's largest row)


@cache
def _table() -> dict[str, Any]:
    return json.loads(resources.files("scclip").joinpath("data", DATA_FILE).read_text())


def published_benchmarks() -> list[str]:
    """The benchmarks the published means average (the paper's eight), in the paper's order."""
    return list(_table()["benchmarks"])


def published_methods() -> list[str]:
    """The method keys that have published numbers (method names and configs/ folder names)."""
    return list(_table()["methods"])


def published_record(method: str, backbone: str) -> dict[str, Any] | None:
    """Everything known about one published row: `miou`, `source`, `verified`, and, where the
    source averages only the five benchmarks without background, `mean_of_five`. None if unpublished."""
    record = _table()["methods"].get(method, {}).get(backbone)
    return None if record is None else json.loads(json.dumps(record))  # a copy the caller may change


def published_miou(method: str, backbone: str) -> dict[str, float] | None:
    """Published mIoU (%) by benchmark key (see `scclip.benchmarks.BENCHMARKS`), plus `mean` where the mean of all
    eight is published (or follows from eight published numbers); None when nothing is published.

    `method` is a method name or, for plain CLIP under another release's protocol, the key a config
    declares as `published_as` ('vanilla_sclip', 'vanilla_clearclip'). Benchmarks the source does
    not report are absent: ViT-L/14 SC-CLIP, for instance, has five benchmarks and the mean of eight.
    """
    record = published_record(method, backbone)
    return None if record is None else record["miou"]


def _record(miou: dict[str, float], source: str, verified: bool) -> dict[str, Any]:
    """One row in benchmark order; `mean` is added from eight numbers when the source gives none,
    and `mean_of_five` where only the benchmarks without background are known."""
    ordered = {key: float(miou[key]) for key in (*BENCHMARKS, "mean") if miou.get(key) is not None}
    record: dict[str, Any] = dict(miou=ordered, source=source, verified=verified)
    if "mean" not in ordered and all(key in ordered for key in BENCHMARKS):
        ordered["mean"] = round(sum(ordered[key] for key in BENCHMARKS) / len(BENCHMARKS), 2)
        record["source"] += "; mean of the eight computed here"
    if "mean_of_five" in miou:
        record["mean_of_five"] = float(miou["mean_of_five"])
    return record


def build_table(settings_dir: str | Path) -> dict[str, Any]:
    """The published numbers gathered from the releases' settings files in `settings_dir`."""
    settings_dir = Path(settings_dir)

    def read(name: str) -> dict[str, Any]:
        path = settings_dir / f"settings_{name}.json"
        newer = settings_dir.parent / "newer_methods" / path.name  # the shared data keeps later releases there
        if not path.is_file() and newer.is_file():
            path = newer
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as error:
            reason = getattr(error, "strerror", None) or error
            raise InputError(f"cannot read {path}: {reason}; give the folder holding settings_*.json") from None

    ablation, sclip, clearclip, naclip = (read(name) for name in ("scclip_ablation", "sclip", "clearclip", "naclip"))
    methods: dict[str, dict[str, Any]] = {}

    full = ablation["scclip_full_miou"]
    methods["scclip"] = {backbone: _record(full[backbone], "SC-CLIP paper (arXiv 2411.15869), OpenAI weights", True)
                         for backbone in (B16, L14)}

    vanilla = ablation["vanilla_clip_miou_cited_by_paper"]
    methods["vanilla"] = {backbone: _record(dict(mean=vanilla[backbone]), f"vanilla CLIP's mean of eight as the SC-CLIP paper cites it ({vanilla['source']})",
                                            vanilla["verified"])
                          for backbone in (B16, L14)}

    readme = sclip["published_miou"]
    methods["sclip"] = {B16: _record(dict(readme[B16], mean=readme[B16]["mean_of_eight"]),
                                     f"SCLIP {readme['source'].split(';')[0]}", True)}
    methods["vanilla_sclip"] = {B16: _record(dict(mean=14.1), "SCLIP paper (arXiv 2312.01597), eight-benchmark "
                                             "average of vanilla CLIP as stated there; per-benchmark values unknown",
                                             False)}

    published = clearclip["published_miou"]
    paper_clearclip, paper_maskclip = published["paper_vit_b16_clearclip_eight"], published["paper_maskclip_row_vit_b16"]
    readme_rows = {backbone: published[f"readme_vit_{tag}"] for backbone, tag in ((B16, "b16"), (L14, "l14"))}
    readme_source = "ClearCLIP release README (Table 2 of its appendix: five benchmarks without background)"

    def five(row: dict[str, float]) -> dict[str, float]:
        return {**{key: row[key] for key in WITHOUT_BACKGROUND}, "mean_of_five": row["mean5"]}

    methods["clearclip"] = {
        B16: _record({**paper_clearclip, **five(readme_rows[B16]["clearclip (CLIP +ClearCLIP)"])},
                     f"ClearCLIP {paper_clearclip['source']}", False),
        L14: _record(five(readme_rows[L14]["clearclip (CLIP +ClearCLIP)"]), readme_source, True),
    }
    methods["maskclip"] = {
        B16: _record({**paper_maskclip, **five(readme_rows[B16]["maskclip (MaskCLIP)"])},
                     f"ClearCLIP {paper_maskclip['source']}", True),
        L14: _record(five(readme_rows[L14]["maskclip (MaskCLIP)"]), readme_source, True),
    }
    methods["vanilla_clearclip"] = {backbone: _record(five(rows["vanilla (CLIP)"]), readme_source, True)
                                    for backbone, rows in readme_rows.items()}

    results = naclip["miou"]
    methods["naclip"] = {B16: _record(dict(results["vit_b16"], mean=results["vit_b16"]["avg"]),
                                      f"NACLIP release {results['source']}", True)}
    resclip = read("resclip")
    results = resclip["miou"]
    methods["resclip"] = {backbone: _record(results[key], f"ResCLIP release {results['source']}", True)
                          for backbone, key in ((B16, "vit_b16"), (L14, "vit_l14"))}
    proxyclip = read("proxyclip")
    rows = proxyclip["published_miou"]
    unconfirmed = ("ProxyCLIP paper (arXiv 2408.04883, Table 1), DINO ViT-B/8 as VFM; values recalled, not "
                   "confirmed from the paper's table")
    methods["proxyclip"] = {
        backbone: _record({**rows[key], "mean": rows[key]["mean8"]}, unconfirmed + note, False)
        for backbone, key, note in (
            (B16, "vit_b16_dino_b8", ""), (L14, "vit_l14_dino_b8", ""),
            (H14, "vit_h14_dino_b8", "; the abstract confirms the mean of eight, 44.4"))
    }
    releases = {name: data["release"] for name, data in
                (("scclip", ablation), ("sclip", sclip), ("clearclip", clearclip), ("naclip", naclip),
                 ("resclip", resclip), ("proxyclip", proxyclip))}
    return dict(benchmarks=list(BENCHMARKS), releases=releases, methods=methods)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"Rebuild scclip/data/{DATA_FILE} from the releases' settings files.")
    parser.add_argument("settings_dir", help="folder with settings_*.json (shared reference/methods)")
    parser.add_argument("--out", default=str(Path(__file__).with_name("data") / DATA_FILE), help="where to write")
    args = parser.parse_args(argv)
    try:
        table = build_table(args.settings_dir)
        write_atomically(args.out, lambda temp: temp.write_text(json.dumps(table, indent=1) + "\n"))
    except ScclipError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}: {sum(len(rows) for rows in table['methods'].values())} published rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
