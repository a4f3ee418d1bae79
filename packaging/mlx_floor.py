"""Print the lowest macOS the installed mlx wheel supports, from the platform tags of mlx and mlx-metal (macosx_14_0_arm64 -> 14.0).

MLX publishes one wheel per macOS release with a metallib built for that Metal language version; the app's
LSMinimumSystemVersion must not be lower than the wheel's floor."""

import re
from importlib import metadata


def wheel_floor(wheel_text: str) -> str:
    tags = re.findall(r"^Tag: .*-macosx_(\d+)_(\d+)_\w+$", wheel_text, re.MULTILINE)
    if not tags:
        raise SystemExit("the installed mlx is not a macOS wheel (no macosx_* tag in its WHEEL file)")
    major, minor = min((int(a), int(b)) for a, b in tags)
    return f"{major}.{minor}"


def installed_floor() -> str:
    """The highest floor among mlx and mlx-metal (which carries libmlx.dylib and mlx.metallib): both must load."""
    floors = []
    for name in ("mlx", "mlx-metal"):
        try:
            floors.append(wheel_floor(metadata.distribution(name).read_text("WHEEL") or ""))
        except metadata.PackageNotFoundError:
            continue
    return max(floors, key=lambda f: tuple(int(x) for x in f.split(".")))


if __name__ == "__main__":
    print(installed_floor())
