"""Judge the GGUF export with llama.cpp itself (llama-cpp-python), on the tiny model.

For each case (architecture x training method x weight type) this trains a short run, exports it
with ``macfinetune export --target gguf`` (the job), and records the fused MLX model's reference:
the prompt's token ids (the chat template applied), its logits at every position and 12 greedy
tokens. Then, in the Python that has llama-cpp-python (a separate venv: it is a source build),
each file is loaded and checked: llama.cpp's own tokenization of the prompt, its logits for the same
ids (largest difference, argmax agreement per position) and its greedy tokens.

    python bench/check_gguf_llamacpp.py --llama-python .llvenv/bin/python [--out /tmp/gguf-check]

Prints one line per case and writes results.json into --out. Exit 1 if any file fails to load or
generate, or if the logits disagree beyond --tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [  # (architecture, method, GGUF type)
    ("llama", "lora", "f16"), ("llama", "lora", "f32"), ("llama", "lora", "bf16"), ("llama", "dora", "f16"),
    ("llama", "full", "f16"), ("llama", "qlora", "f16"), ("mistral", "lora", "f16"), ("qwen2", "lora", "f16"),
    ("qwen3", "lora", "f16"), ("gemma3_text", "lora", "f16"), ("llama-sentencepiece", "lora", "f16"),
]
MESSAGES = [{"role": "user", "content": "What does the cat like?"}]
GREEDY = 12


def prepare(out: Path) -> list[dict]:
    """Models, runs, exports and the MLX reference for every case (runs in the project's Python)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["MACFINETUNE_HOME"] = str(out / "home")
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import fast_recipe

    from macfinetune import jobs
    from macfinetune.backend.tinymodel import (
        build_demo_model,
        build_tiny_sentencepiece_model,
        build_tiny_variant,
    )
    from macfinetune.backend.training import train_run
    from macfinetune.core.control import JobControl

    tiny = build_demo_model(out / "models" / "llama") if not (out / "models" / "llama").exists() else out / "models" / "llama"
    cases = []
    for arch, method, dtype in CASES:
        if arch == "llama-sentencepiece":
            model = out / "models" / arch
            if not model.exists():
                template = (ROOT / "tests" / "data" / "chat_templates" / "mistral-7b-instruct-v0.3.jinja").read_text()
                build_tiny_sentencepiece_model(model, template)
        else:
            model = tiny if arch == "llama" else _variant(build_tiny_variant, tiny, out / "models" / arch, arch)
        if method == "qlora":
            model = _quantized(model, out / "models" / f"{arch}-q4")
        run_dir = out / "runs" / f"{arch}-{method}"
        if not run_dir.exists():
            kind = "lora" if method == "qlora" else method
            train_run(fast_recipe(model, f"method.type={kind}", "iterations=8"), run_dir, lambda e: None)
        dest = out / "gguf" / f"{arch}-{method}-{dtype}"
        case = {"arch": arch, "method": method, "dtype": dtype, "gguf": str(dest / "model.gguf")}
        try:
            if not dest.exists():
                jobs.export_model(lambda e: None, JobControl(), run_dir=run_dir, checkpoint="last", target="gguf",
                                  dest=dest, dtype=dtype)
            case.update(_reference(run_dir))
        except Exception as e:  # recorded, not raised: the other cases still run
            case["export_error"] = f"{type(e).__name__}: {e}"
        cases.append(case)
    return cases


def _variant(build, tiny: Path, folder: Path, arch: str) -> Path:
    return folder if folder.exists() else build(tiny, folder, arch)


def _quantized(model: Path, folder: Path) -> Path:
    from mlx_lm.convert import convert

    if not folder.exists():
        convert(str(model), str(folder), quantize=True, q_bits=4, q_group_size=32)
    return folder


def _reference(run_dir: Path) -> dict:
    """Prompt ids, logits and greedy tokens of the fused (de-quantized) MLX model."""
    import mlx.core as mx
    from mlx_lm.generate import generate_step

    from macfinetune.backend import fusing

    loaded = fusing.load_fused(run_dir, "last", dequantize=True)
    ids = loaded.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    ids = list(ids["input_ids"] if isinstance(ids, dict) else ids)
    logits = loaded.net(mx.array([ids]))[0].astype(mx.float32)
    greedy = []
    for token, _ in generate_step(mx.array(ids), loaded.net, max_tokens=GREEDY, sampler=lambda x: mx.argmax(x, -1)):
        greedy.append(int(token))
    text = loaded.tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)
    return {"ids": ids, "text": text, "logits": logits.tolist(), "greedy": greedy}


def judge(cases: list[dict]) -> list[dict]:
    """Load and run each file in llama.cpp (runs in the Python that has llama-cpp-python)."""
    import llama_cpp
    import numpy as np

    results = []
    for case in cases:
        result = {k: case[k] for k in ("arch", "method", "dtype", "gguf")} | {"llama_cpp": llama_cpp.__version__}
        if "export_error" in case:
            results.append(result | {"ok": False, "error": case["export_error"]})
            continue
        try:
            start = time.perf_counter()
            llm = llama_cpp.Llama(case["gguf"], n_ctx=256, logits_all=True, verbose=False, n_threads=2, seed=0)
            result["load_s"] = round(time.perf_counter() - start, 3)
            ids = case["ids"]
            own = llm.tokenize(case["text"].encode(), add_bos=False, special=True)
            result["tokenization_equal"] = own == ids or own == ids[1:]
            llm.eval(ids)
            scores = np.array(llm.scores[: len(ids)], dtype=np.float32)
            ref = np.array(case["logits"], dtype=np.float32)[:, : scores.shape[1]]
            result["max_abs_logit_diff"] = float(np.abs(scores - ref).max())
            result["logit_scale"] = float(np.abs(ref).max())
            result["argmax_agree"] = f"{int((scores.argmax(1) == ref.argmax(1)).sum())}/{len(ids)}"
            llm.reset()
            greedy = []
            for token in llm.generate(ids, temp=0.0, top_k=1, top_p=1.0, repeat_penalty=1.0):
                greedy.append(int(token))
                if len(greedy) == GREEDY:
                    break
            result["greedy_llama_cpp"] = greedy
            result["greedy_mlx"] = case["greedy"]
            pairs = zip(greedy, case["greedy"], strict=False)
            same = next((i for i, (a, b) in enumerate(pairs) if a != b), len(greedy))
            result["greedy_same_prefix"] = same
            result["generated_text"] = llm.detokenize(greedy).decode("utf-8", "replace")
            result["ok"] = True
            del llm
        except Exception as e:
            result |= {"ok": False, "error": f"{type(e).__name__}: {e}"}
        results.append(result)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-python", default=str(ROOT / ".llvenv" / "bin" / "python"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/gguf-check"))
    parser.add_argument("--tolerance", type=float, default=0.05, help="largest |logit difference| allowed, "
                        "relative to the largest logit")
    parser.add_argument("--judge", type=Path, help=argparse.SUPPRESS)  # internal: cases.json to judge
    args = parser.parse_args()
    if args.judge:
        cases = json.loads(args.judge.read_text())
        (args.judge.parent / "judged.json").write_text(json.dumps(judge(cases), indent=1))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    cases_file = args.out / "cases.json"
    cases_file.write_text(json.dumps(prepare(args.out)))
    subprocess.run([args.llama_python, __file__, "--judge", str(cases_file)], check=True)
    results = json.loads((args.out / "judged.json").read_text())
    failed = 0
    for r in results:
        within = r.get("ok") and r["max_abs_logit_diff"] <= args.tolerance * max(r["logit_scale"], 1.0)
        failed += not within
        if r.get("ok"):
            print(f"{'ok  ' if within else 'FAIL'} {r['arch']:12} {r['method']:6} {r['dtype']:5} loaded in "
                  f"{r['load_s']:.2f} s; tokens equal: {r['tokenization_equal']}; max |dlogit| "
                  f"{r['max_abs_logit_diff']:.2e} (largest logit {r['logit_scale']:.2f}); argmax agree "
                  f"{r['argmax_agree']}; greedy same for {r['greedy_same_prefix']}/{GREEDY} tokens: "
                  f"{r['generated_text']!r}")
        else:
            print(f"FAIL {r['arch']:12} {r['method']:6} {r['dtype']:5} {r['error']}")
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"{len(results) - failed}/{len(results)} GGUF files load, generate and match MLX; details in "
          f"{args.out / 'results.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
