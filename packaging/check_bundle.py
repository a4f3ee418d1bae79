"""Check a built bundle (macfinetune.app or the Linux one-folder dist/macfinetune) before it is shipped:
exactly one MLX library (a second build would load beside the first), the metallib beside it on macOS, nothing
the app must not carry (torch, test suites), and the size, largest first. Exit 1 with the reason otherwise.
Usage: check_bundle.py BUNDLE"""

import sys
from pathlib import Path

FORBIDDEN = ("torch", "tensorflow", "jax", "pytest", "matplotlib", "tkinter")


def files(bundle: Path) -> list[Path]:
    return [p for p in bundle.rglob("*") if p.is_file() and not p.is_symlink()]


def mlx_libraries(bundle: Path) -> list[Path]:
    return sorted(p for p in files(bundle) if p.name.startswith("libmlx.") and p.suffix in (".so", ".dylib"))


def problems(bundle: Path) -> list[str]:
    found = []
    libs = mlx_libraries(bundle)
    if len(libs) != 1:
        found.append(f"expected one MLX library, found {len(libs)}: {', '.join(map(str, libs)) or 'none'}")
    if sys.platform == "darwin" and libs and not (libs[0].parent / "mlx.metallib").is_file():
        found.append(f"no mlx.metallib beside {libs[0]}")
    for link in (p for p in bundle.rglob("libmlx.*") if p.is_symlink()):
        if sys.platform == "darwin" and not (link.parent / "mlx.metallib").exists():
            found.append(f"{link} links to {link.resolve()} but has no mlx.metallib beside it (MLX looks beside "
                         "the path it was loaded from)")
    names = {part.lower() for p in files(bundle) for part in p.relative_to(bundle).parts}
    found += [f"the bundle carries {name}" for name in FORBIDDEN if name in names]
    return found


def sizes(bundle: Path, top: int = 12) -> list[str]:
    by_dir: dict[str, int] = {}
    for p in files(bundle):
        rel = p.relative_to(bundle).parts
        key = "/".join(rel[:3] if rel[0] == "Contents" else rel[:2])
        by_dir[key] = by_dir.get(key, 0) + p.stat().st_size
    total = sum(by_dir.values())
    rows = sorted(by_dir.items(), key=lambda kv: -kv[1])[:top]
    return [f"total {total / 1e6:.0f} MB"] + [f"  {size / 1e6:8.1f} MB  {name}" for name, size in rows]


def main(bundle: Path) -> int:
    for line in sizes(bundle):
        print(line)
    found = problems(bundle)
    for problem in found:
        print(f"FAIL  {problem}")
    print("bundle check: ok" if not found else f"bundle check: {len(found)} problem(s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
