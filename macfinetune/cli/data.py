"""`macfinetune data ...` (the dataset doctor) and `macfinetune models ...` (model sources).

``add_parsers(subparsers)`` adds both commands; ``cmd_data`` and ``cmd_models`` run them and
return an exit code (0 done, 2 bad input via ProblemError, 130 stopped). Bad input raises
``ProblemError``; ``cli.main`` prints it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from macfinetune import jobs
from macfinetune.cli.common import EXIT_OK, EXIT_STOPPED, StopOnCtrlC, shell_command
from macfinetune.core import doctor, formats, models_catalog
from macfinetune.core.control import JobControl
from macfinetune.core.events import Stage
from macfinetune.core.models_catalog import DownloadFinished, DownloadProgress

_BAR = 30


# --- parsers ------------------------------------------------------------------------------------


def add_parsers(sub) -> None:
    """Add the ``data`` and ``models`` commands to ``cli.build_parser``'s subparsers."""
    _add_data(sub)
    _add_models(sub)


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="inspect a dataset (the dataset doctor) or convert it to mlx-lm files")
    data = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    inspect = data.add_parser("inspect", help="format, splits, token lengths and problems, naming the rows")
    _add_source(inspect)
    inspect.add_argument("--model", help="model folder or Hugging Face repo: token counts with its tokenizer and "
                                         "chat template (without it: no token statistics)")
    inspect.add_argument("--max-seq-length", type=int, default=2048,
                         help="truncation length to check (default 2048); with --model, .txt/.md documents are "
                              "split into chunks of this many tokens, as training does")
    inspect.add_argument("--chunk-overlap", type=int, default=0,
                         help="with --model: tokens repeated between consecutive chunks (data.chunk_overlap)")
    inspect.add_argument("--mask-prompt", action="store_true", help="check as if training on answers only")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")
    _add_split(inspect)
    prepare = data.add_parser("prepare", help="write train.jsonl / valid.jsonl (mlx-lm format) into a new folder")
    _add_source(prepare)
    prepare.add_argument("--out", type=Path, required=True, help="new folder for the .jsonl files")
    _add_split(prepare)


def _add_source(p) -> None:
    p.add_argument("path", help="a file (.jsonl, .json, .csv, .tsv, .txt, .md), a folder (train/valid/test files, "
                                ".txt/.md files, a saved Hugging Face dataset) or a Hugging Face dataset name")
    p.add_argument("--columns", help="table columns, e.g. prompt=Question,completion=Answer[,system=...,input=...] "
                                     "or text=Body (default: guessed from the header)")
    p.add_argument("--chunk-chars", type=int, default=formats.DEFAULT_CHUNK_CHARS,
                   help="without --model: split text files into pieces of at most this many characters at blank lines "
                        "(0: whole files)")


def _add_split(p) -> None:
    p.add_argument("--valid-fraction", type=float, default=0.1,
                   help="share of rows held out for validation when the data has no valid split (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of that split (default 0, as training.seed)")


def _add_models(sub) -> None:
    p = sub.add_parser("models", help="models on this machine: list, download from the hub, convert to MLX")
    models = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = models.add_parser("list", help="models in the Hugging Face cache, LM Studio and your folders")
    listing.add_argument("--folder", type=Path, action="append", default=[], help="also look in this folder")
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    download = models.add_parser("download", help="download safetensors, config and tokenizer from the hub")
    download.add_argument("repo", help="Hugging Face repo id, e.g. mlx-community/Qwen3-0.6B-bf16")
    download.add_argument("--revision", help="branch, tag or commit (default main)")
    download.add_argument("--offline", action="store_true", help="use only the local cache")
    convert = models.add_parser("convert", help="convert a Hugging Face model to MLX, optionally quantized")
    convert.add_argument("source", help="model folder or Hugging Face repo id")
    convert.add_argument("--quantize", type=int, choices=(4, 8), help="quantize to 4 or 8 bits")
    convert.add_argument("--group-size", type=int, default=64, choices=(32, 64, 128), help="quantization group size")
    convert.add_argument("--dtype", choices=("float16", "bfloat16", "float32"), help="weight type when not quantized")
    convert.add_argument("--out", type=Path, help="output folder (default: your models folder)")


# --- data ---------------------------------------------------------------------------------------


def cmd_data(args) -> int:
    if args.data_command == "prepare":
        return _prepare(_load(args), args)
    control = JobControl()
    try:
        with StopOnCtrlC(control):
            report = jobs.inspect_dataset(_DownloadPrinter().show, control, path=args.path, model=args.model,
                                          mapping=_mapping(args), chunk_chars=args.chunk_chars,
                                          max_seq_length=args.max_seq_length, mask_prompt=args.mask_prompt,
                                          valid_fraction=args.valid_fraction, seed=args.seed,
                                          chunk_overlap=args.chunk_overlap)
    except jobs.Cancelled:
        print("stopped", file=sys.stderr)
        return EXIT_STOPPED
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print("\n".join(report_lines(report, args.model)))
    return EXIT_OK


def _load(args) -> formats.LoadedData:
    return jobs.load_data(args.path, mapping=_mapping(args), chunk_chars=args.chunk_chars,
                          token_chunks=_token_chunks(args))


def _token_chunks(args) -> formats.TokenChunks | None:
    """With a model, documents are chunked by its tokens exactly as training will chunk them."""
    if not getattr(args, "model", None):
        return None
    from macfinetune.backend.tokens import document_encoder

    encode = document_encoder(args.model, emit=_DownloadPrinter().show)
    return formats.TokenChunks(encode, args.max_seq_length, args.chunk_overlap)


def _mapping(args):
    return formats.parse_mapping(args.columns) if args.columns else None


def _prepare(data: formats.LoadedData, args) -> int:
    prepared = formats.prepare(data, args.out, valid_fraction=args.valid_fraction, seed=args.seed)
    rows = ", ".join(f"{name} {count:,}" for name, count in prepared.rows.items())
    made = f" (valid cut from train: {args.valid_fraction:.0%}, seed {args.seed})" if prepared.valid_created else ""
    print(f"{formats.SOURCE_FORMATS.get(data.format.removeprefix('hf:'), data.format)} -> mlx-lm {data.mlx_format}: "
          f"{rows}{made}")
    for note in data.notes:
        print(f"  {note}")
    print(f"wrote {', '.join(p.name for p in prepared.files)} in {prepared.out_dir}")
    print(f"next: {shell_command('macfinetune', 'data', 'inspect', prepared.out_dir, '--model', 'MODEL')}  |  "
          f"{shell_command('macfinetune', 'train', 'RECIPE', '--data', prepared.out_dir)}")
    return EXIT_OK


def report_lines(report: doctor.Report, model: str | None = None) -> list[str]:
    """The doctor's report as text lines for a terminal."""
    label = formats.SOURCE_FORMATS.get(report.format.removeprefix("hf:"), report.format)
    lines = [f"dataset   {report.source}", f"format    {label} -> mlx-lm {report.mlx_format}",
             f"rows      {_splits_text(report)}"]
    lines += [f"note      {note}" for note in report.notes]
    lines += _token_lines(report, model)
    lines += _finding_lines(report)
    return lines


def _splits_text(report: doctor.Report) -> str:
    parts = []
    for s in report.splits:
        made = f" (cut from train: {report.valid_fraction:.0%}, seed {report.seed})" if s.created else ""
        parts.append(f"{s.name} {s.rows:,}{made}")
    return ", ".join(parts)


def _token_lines(report: doctor.Report, model: str | None) -> list[str]:
    stats = report.lengths
    if stats is None:
        return ["tokens    (pass --model MODEL for token lengths with its tokenizer and chat template)"]
    lines = [f"tokens    with the tokenizer and chat template of {model}",
             f"          min {stats.min:,}  median {stats.median:,.0f}  p95 {stats.p95:,}  max {stats.max:,}  "
             f"mean {stats.mean:,.1f}  total {stats.total:,}"]
    widest = max(b.count for b in stats.histogram) or 1
    for b in stats.histogram:
        bar = "#" * round(_BAR * b.count / widest)
        lines.append(f"          {b.low:>7,}-{b.high - 1:<7,} {bar:<{_BAR}} {b.count:,}")
    t = report.truncation
    lines.append(f"          max_seq_length {t.max_seq_length:,}: {t.rows:,} rows truncated"
                 + (f" ({t.tokens_lost:,} tokens cut, at most {t.most_lost:,} from one row)" if t.rows else ""))
    masking = "prompt masked" if report.mask_prompt else "prompt trained too"
    lines.append(f"          {report.trained_tokens:,} tokens carry loss per epoch ({masking})")
    return lines


def _finding_lines(report: doctor.Report) -> list[str]:
    if not report.findings:
        return ["problems  none found"]
    lines = ["problems"]
    for finding in report.findings:
        shown = ", ".join(str(r) for r in finding.rows[:5]) + (" ..." if len(finding.rows) > 5 else "")
        lines.append(f"  {finding.severity:<8}{finding.message}: {shown}")
        lines += [f"            {detail}" for detail in finding.details[:5]]
    return lines


# --- models -------------------------------------------------------------------------------------


def cmd_models(args) -> int:
    return _MODEL_ACTIONS[args.models_command](args)


def _list(args) -> int:
    from macfinetune.backend import hub
    from macfinetune.backend.architectures import supported_model_types

    entries = hub.local_models(args.folder, supported_model_types())
    if args.json:
        print(json.dumps([_entry_dict(e) for e in entries], indent=2))
        return EXIT_OK
    if not entries:
        print("no models found (looked in the Hugging Face cache, LM Studio and your models folder)")
        return EXIT_OK
    print(f"{'MODEL':<44} {'SOURCE':<11} {'TYPE':<12} {'PARAMS':>8} {'QUANT':<16} {'SIZE':>9} {'CONTEXT':>8}  MLX-LM")
    for e in entries:
        print(f"{e.name[:44]:<44} {e.source:<11} {(e.model_type or '-')[:12]:<12} {_count(e.parameters):>8} "
              f"{(e.quantization or e.dtype or '-')[:16]:<16} {_bytes(e.size_bytes):>9} "
              f"{e.context_length or '-':>8}  {'yes' if e.supported else 'no: ' + _first_problem(e)}")
    return EXIT_OK


def _entry_dict(e: models_catalog.ModelEntry) -> dict:
    plain = {k: getattr(e, k) for k in e.__dataclass_fields__}
    plain["path"] = str(e.path)
    plain["problems"] = [p.message for p in e.problems]
    plain["notes"] = list(e.notes)
    return plain


def _first_problem(e: models_catalog.ModelEntry) -> str:
    return e.problems[0].message if e.problems else "unknown"


def _download(args) -> int:
    control = JobControl()
    try:
        with StopOnCtrlC(control):
            folder = jobs.download(_DownloadPrinter().show, control, repo_id=args.repo, revision=args.revision,
                                   offline=True if args.offline else None)
    except jobs.Cancelled:
        print("\nstopped; finished files stay in the cache and the same command downloads the rest",
              file=sys.stderr)
        return EXIT_STOPPED
    print(f"\n{args.repo}: {folder}")
    return EXIT_OK


def _convert(args) -> int:
    out = jobs.convert(_DownloadPrinter().show, JobControl(), source=args.source, bits=args.quantize,
                       group_size=args.group_size, out_dir=args.out, dtype=args.dtype)
    print(f"MLX model: {out}\nnext: {shell_command('macfinetune', 'train', 'RECIPE', '--model', out)}")
    return EXIT_OK


_MODEL_ACTIONS = {"list": _list, "download": _download, "convert": _convert}


class _DownloadPrinter:
    """Download progress on one stderr line; stage messages on their own lines."""

    def show(self, event) -> None:
        if isinstance(event, DownloadProgress):
            total = f"/{_bytes(event.total_bytes)}" if event.total_bytes else ""
            files = f"{event.files_done}/{event.files_total} files" if event.files_total else ""
            sys.stderr.write(f"\r\033[Kdownloading {event.repo_id}: {_bytes(event.done_bytes)}{total}  {files}")
            sys.stderr.flush()
        elif isinstance(event, DownloadFinished):
            sys.stderr.write("\n")
        elif isinstance(event, Stage):
            print(event.message, file=sys.stderr)


def _count(n: int | None) -> str:
    if not n:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _bytes(n: int | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


COMMANDS = {"data": cmd_data, "models": cmd_models}
