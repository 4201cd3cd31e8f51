"""Flat_Content clips: screen recordings rendered here from real text and data (not captured from a screen).

Four kinds of screen, each drawn from a real source that ships with vidtempo or its dependencies:

* ``code``: vidtempo's own source files in an editor (syntax colours from Python's tokenizer, line numbers,
  the folder's files in a side bar), scrolled with the mouse wheel;
* ``docs``: the documentation of a standard-library module (``pydoc``'s text) in a terminal pager, scrolled
  line by line and a page at a time;
* ``data``: a notebook showing a real data set bundled with scikit-learn as a table and as matplotlib charts,
  scrolled from the table to the charts;
* ``slides``: the module docstrings of one vidtempo folder as a slide deck: bullets appear, slides change.

Every clip is a viewport over a page drawn once, so a clip costs a few milliseconds a frame. The mouse pointer
and the text caret move as on a real screen. A seed picks the theme, the start and the motion.
"""

from __future__ import annotations

import ast
import io
import keyword
import re
import textwrap
import tokenize
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

SCREEN_WIDTH, SCREEN_HEIGHT = 854, 480  # 480p, 16:9
SCREEN_FPS = 30
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/vidtempo (or site-packages/vidtempo)


@dataclass(frozen=True)
class ScreenSource:
    """One text source: a vidtempo folder (code, slides), a standard-library module (docs) or a scikit-learn
    data set (data). A split's sources are never another split's."""

    kind: str  # code, docs, data or slides
    name: str  # the folder under vidtempo/, the module, or the data set (sklearn.datasets.load_NAME)

    @property
    def label(self) -> str:
        return {
            "code": f"code of vidtempo/{self.name}/",
            "docs": f"pydoc {self.name}",
            "data": f"scikit-learn {self.name} data",
            "slides": f"slides of vidtempo/{self.name}/ docstrings",
        }[self.kind]

    @property
    def stem(self) -> str:
        return f"{self.kind}_{self.name}"


# ----------------------------------------------------------------------------------------------- drawing
@lru_cache(maxsize=None)
def font(name: str, size: int):
    """A DejaVu font from matplotlib's data folder: matplotlib is a dependency, so it is always there."""
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"{name}.ttf"), size)


def mono(size: int = 13):
    return font("DejaVuSansMono", size)


def sans(size: int = 13, bold: bool = False):
    return font("DejaVuSans-Bold" if bold else "DejaVuSans", size)


THEMES = {
    "dark": {"bg": (30, 30, 30), "fg": (212, 212, 212), "keyword": (86, 156, 214), "string": (206, 145, 120),
             "comment": (106, 153, 85), "number": (181, 206, 168), "gutter": (133, 133, 133),
             "chrome": (50, 50, 52), "side": (37, 37, 38), "status": (0, 122, 204), "select": (38, 79, 120)},
    "light": {"bg": (255, 255, 255), "fg": (36, 41, 46), "keyword": (0, 0, 255), "string": (163, 21, 21),
              "comment": (0, 128, 0), "number": (9, 134, 88), "gutter": (35, 120, 147),
              "chrome": (221, 221, 221), "side": (243, 243, 243), "status": (0, 122, 204), "select": (173, 214, 255)},
}


def draw_pointer(draw, x: float, y: float, ink=(0, 0, 0), fill=(255, 255, 255)) -> None:
    """The usual arrow pointer with its tip at (x, y)."""
    shape = [(0, 0), (0, 17), (4, 13), (7, 20), (10, 19), (7, 12), (12, 12)]
    draw.polygon([(x + dx, y + dy) for dx, dy in shape], fill=fill, outline=ink)


def pointer_path(rng: np.random.Generator, frames: int) -> np.ndarray:
    """Where the pointer is on each frame: it rests, then glides to a new place, as a hand moves a mouse."""
    here = rng.uniform([40, 60], [SCREEN_WIDTH - 40, SCREEN_HEIGHT - 60])
    path = []
    target, speed = here, 0.0
    for _ in range(frames):
        if rng.random() < 0.15:
            target = rng.uniform([40, 60], [SCREEN_WIDTH - 40, SCREEN_HEIGHT - 60])
            speed = rng.uniform(0.25, 0.6)
        here = here + speed * (target - here)
        path.append(here.copy())
    return np.array(path)


def title_bar(draw, text: str, theme: dict) -> int:
    """A window's title bar with its buttons; returns its height."""
    height = 30
    draw.rectangle([0, 0, SCREEN_WIDTH, height], fill=theme["chrome"])
    for i, colour in enumerate([(255, 95, 86), (255, 189, 46), (39, 201, 63)]):
        draw.ellipse([12 + 20 * i, 9, 24 + 20 * i, 21], fill=colour)
    ink = theme["fg"] if sum(theme["chrome"]) < 384 else (40, 40, 40)
    width = draw.textlength(text, font=sans(13))
    draw.text(((SCREEN_WIDTH - width) / 2, 7), text, fill=ink, font=sans(13))
    return height


def scroll_offsets(rng: np.random.Generator, frames: int, step: int, limit: int) -> list[int]:
    """Per-frame scroll positions (pixels): wheel notches that each move ``step`` pixels, eased over two or
    three frames, with pauses between, never past ``limit``."""
    offsets, position, target = [], 0.0, 0.0
    for _ in range(frames):
        if rng.random() < 0.45:
            target = min(limit, target + step * int(rng.integers(1, 4)))
        position += 0.55 * (target - position)
        offsets.append(int(round(position)))
    return offsets


# ----------------------------------------------------------------------------------------------- code
def python_files(folder: str) -> list[Path]:
    files = sorted((PACKAGE_DIR / folder).glob("*.py"))
    return [f for f in files if f.stat().st_size > 400] or files


def token_colours(source: str, theme: dict) -> list[list[tuple[str, tuple[int, int, int]]]]:
    """``source``'s lines as (text, colour) runs, coloured by Python's own tokenizer."""
    lines = source.splitlines()
    colours: list[dict[int, tuple[int, tuple[int, int, int]]]] = [{} for _ in lines]  # col -> (end, colour)
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            kind = {tokenize.COMMENT: "comment", tokenize.STRING: "string", tokenize.NUMBER: "number"}.get(token.type)
            if token.type == tokenize.NAME and keyword.iskeyword(token.string):
                kind = "keyword"
            if kind is None:
                continue
            (row, col), (end_row, end_col) = token.start, token.end
            for r in range(row, end_row + 1):  # a string may span lines
                start = col if r == row else 0
                end = end_col if r == end_row else len(lines[r - 1])
                colours[r - 1][start] = (end, theme[kind])
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass  # a file the tokenizer rejects is shown as plain text
    runs = []
    for line, marks in zip(lines, colours):
        line = line.expandtabs(4)
        parts, col = [], 0
        for start in sorted(marks):
            end, colour = marks[start]
            if start > col:
                parts.append((line[col:start], theme["fg"]))
            parts.append((line[start:end], colour))
            col = max(col, end)
        parts.append((line[col:], theme["fg"]))
        runs.append(parts)
    return runs


EDITOR_SIDE, EDITOR_TOP, EDITOR_BOTTOM = 190, 30 + 26, SCREEN_HEIGHT - 22  # side bar, tabs, status bar


def code_page(shown: list, first_line: int, theme: dict, size: int, width: int):
    """The editor's text (numbered, coloured lines), drawn once as a tall page that the window then views;
    returns it and the gutter's width."""
    from PIL import Image, ImageDraw

    line_height, text_font = size + 5, mono(size)
    page = Image.new("RGB", (width, line_height * (len(shown) + 1)), theme["bg"])
    draw = ImageDraw.Draw(page)
    gutter = int(text_font.getlength("M") * 5) + 10
    for i, parts in enumerate(shown):
        y = i * line_height + 2
        number = str(first_line + i + 1)
        draw.text((gutter - 8 - text_font.getlength(number), y), number, fill=theme["gutter"], font=text_font)
        x = gutter + 6
        for text, colour in parts:
            draw.text((x, y), text, fill=colour, font=text_font)
            x += text_font.getlength(text)
    return page, gutter


def editor_chrome(path: Path, files: list[Path], folder: str, theme: dict, lines: int):
    """The editor's window around the text: title, tab, the folder's files in the side bar, status bar."""
    from PIL import Image, ImageDraw

    side, top, bottom = EDITOR_SIDE, EDITOR_TOP, EDITOR_BOTTOM
    chrome = Image.new("RGB", (SCREEN_WIDTH, SCREEN_HEIGHT), theme["side"])
    draw = ImageDraw.Draw(chrome)
    title_bar(draw, f"{path.name} - vidtempo - Editor", theme)
    draw.rectangle([side, 30, SCREEN_WIDTH, top], fill=theme["chrome"])
    draw.rectangle([side, 30, side + 12 + sans(12).getlength(path.name) + 12, top], fill=theme["bg"])
    draw.text((side + 12, 35), path.name, fill=theme["fg"], font=sans(12))
    draw.text((12, 38), f"VIDTEMPO / {folder.upper()}", fill=theme["gutter"], font=sans(11, bold=True))
    for i, other in enumerate(files[:20]):
        y = 60 + 20 * i
        if other == path:
            draw.rectangle([0, y - 2, side, y + 16], fill=theme["select"])
        draw.text((20, y), other.name, fill=theme["fg"], font=sans(12))
    draw.rectangle([0, bottom, SCREEN_WIDTH, SCREEN_HEIGHT], fill=theme["status"])
    draw.text((10, bottom + 4), f"main   Python   UTF-8   {lines} lines", fill=(255, 255, 255), font=sans(11))
    return chrome


def render_code(source: ScreenSource, rng: np.random.Generator, frames: int, clip_index: int
                ) -> tuple[list[np.ndarray], str | None]:
    """An editor scrolling through one of the folder's files; returns the frames and the file shown."""
    from PIL import ImageDraw

    files = python_files(source.name)
    path = files[(clip_index + int(rng.integers(len(files)))) % len(files)]
    theme = THEMES[str(rng.choice(list(THEMES)))]
    size = int(rng.choice([12, 13, 14]))
    line_height, char = size + 5, mono(size).getlength("M")
    runs = token_colours(path.read_text(encoding="utf-8"), theme)
    side, top, bottom = EDITOR_SIDE, EDITOR_TOP, EDITOR_BOTTOM
    visible = (bottom - top) // line_height + 1
    start = int(rng.integers(0, max(1, len(runs) - visible - 12)))
    offsets = scroll_offsets(rng, frames, 3 * line_height, max(0, (len(runs) - start - visible) * line_height))
    shown = runs[start : start + visible + offsets[-1] // line_height + 2]

    page, gutter = code_page(shown, start, theme, size, SCREEN_WIDTH - side)
    chrome = editor_chrome(path, files, source.name, theme, len(runs))

    pointer = pointer_path(rng, frames)
    caret_line = int(rng.integers(2, visible - 2))
    out = []
    for t in range(frames):
        frame = chrome.copy()
        view = page.crop((0, offsets[t], page.width, offsets[t] + bottom - top))
        frame.paste(view, (side, top))
        draw = ImageDraw.Draw(frame)
        if (t // 8) % 2 == 0:  # the caret blinks at about 2 Hz
            x = side + gutter + 6 + char * 4
            y = top + caret_line * line_height + 2
            draw.line([x, y, x, y + size + 2], fill=theme["fg"], width=2)
        thumb = top + (bottom - top) * (start * line_height + offsets[t]) / max(1, len(runs) * line_height)
        draw.rectangle([SCREEN_WIDTH - 10, thumb, SCREEN_WIDTH - 3, thumb + 40], fill=theme["gutter"])
        draw_pointer(draw, *pointer[t])
        out.append(np.asarray(frame))
    return out, f"vidtempo/{source.name}/{path.name}"


# ----------------------------------------------------------------------------------------------- docs
def module_help(module: str) -> list[str]:
    """``python -m pydoc MODULE``'s text, as a terminal shows it."""
    import importlib
    import pydoc  # here: it imports much of the standard library, and `vidtempo --help` imports this module

    text = pydoc.render_doc(importlib.import_module(module), "Help on %s:", renderer=pydoc.plaintext)
    # Default values' reprs hold memory addresses, which change from run to run: dropped, so a seed gives one clip.
    return [re.sub(r" at 0x[0-9a-fA-F]+", "", line).expandtabs(8) for line in text.splitlines()]


def render_docs(source: ScreenSource, rng: np.random.Generator, frames: int, clip_index: int
                ) -> tuple[list[np.ndarray], str | None]:
    """A terminal pager over a module's documentation, scrolled by lines and, once, by a page."""
    from PIL import Image, ImageDraw

    lines = module_help(source.name)
    dark = bool(rng.random() < 0.6)
    bg, fg = ((12, 12, 12), (204, 204, 204)) if dark else ((253, 246, 227), (40, 40, 40))
    theme = {"chrome": (60, 60, 60) if dark else (225, 225, 225), "fg": (230, 230, 230) if dark else (40, 40, 40)}
    size = int(rng.choice([13, 14, 15]))
    line_height = size + 4
    top, bottom = 30, SCREEN_HEIGHT - line_height - 4
    visible = (bottom - top) // line_height
    first = int(rng.integers(0, max(1, len(lines) - 3 * visible)))
    # Down-arrow held (a line a frame) with pauses, and one page down (space) at a random moment.
    page_at = int(rng.integers(1, max(2, frames - 1)))
    positions, position = [], first
    for t in range(frames):
        if t == page_at:
            position += visible - 1
        elif rng.random() < 0.6:
            position += 1
        positions.append(min(position, max(0, len(lines) - visible)))
    pointer = pointer_path(rng, frames)
    out = []
    for t in range(frames):
        frame = Image.new("RGB", (SCREEN_WIDTH, SCREEN_HEIGHT), bg)
        draw = ImageDraw.Draw(frame)
        title_bar(draw, f"Terminal - python3 -m pydoc {source.name}", theme)
        for i, line in enumerate(lines[positions[t] : positions[t] + visible]):
            draw.text((8, top + 4 + i * line_height), line, fill=fg, font=mono(size))
        status = f" lines {positions[t] + 1}-{positions[t] + visible} ({100 * (positions[t] + visible) // len(lines)}%)"
        draw.rectangle([0, bottom + 2, mono(size).getlength(status) + 8, SCREEN_HEIGHT], fill=fg)
        draw.text((4, bottom + 3), status, fill=bg, font=mono(size))
        draw_pointer(draw, *pointer[t])
        out.append(np.asarray(frame))
    return out, None


# ----------------------------------------------------------------------------------------------- data
@lru_cache(maxsize=8)
def data_set(name: str):
    import sklearn.datasets

    return getattr(sklearn.datasets, f"load_{name}")()


def chart_image(name: str, width: int, height: int) -> np.ndarray:
    """Two matplotlib charts of the data set: two features against each other by class (or against the
    target), and the distribution of one feature."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = data_set(name)
    x, names = data.data, [str(n) for n in data.feature_names]
    figure = Figure(figsize=(width / 100, height / 100), dpi=100)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    classes = getattr(data, "target_names", None)
    if classes is not None and np.ndim(data.target) == 1:
        for label, class_name in enumerate(classes):
            mine = data.target == label
            left.scatter(x[mine, 0], x[mine, 1], s=10, label=str(class_name))
            right.hist(x[mine, 2], bins=20, alpha=0.6, label=str(class_name))
        left.legend(fontsize=8)
        left.set_xlabel(names[0])
        left.set_ylabel(names[1])
        left.set_title(f"{name}: {names[0]} vs {names[1]}", fontsize=10)
        right.set_xlabel(names[2])
        right.set_title(f"{names[2]} by class", fontsize=10)
    else:  # a regression set: a feature against the target, and the target's distribution
        target = np.asarray(data.target).reshape(len(x), -1)[:, 0]
        left.scatter(x[:, 2], target, s=10)
        left.set_xlabel(names[2])
        left.set_ylabel("target")
        left.set_title(f"{name}: target vs {names[2]}", fontsize=10)
        right.hist(target, bins=25)
        right.set_xlabel("target")
        right.set_title("target distribution", fontsize=10)
    right.set_ylabel("count")
    figure.tight_layout()
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def notebook_page(name: str, rng: np.random.Generator):
    """A notebook's page, drawn once: a cell showing 30 rows of the data set as a table, then a cell with its
    charts."""
    from PIL import Image, ImageDraw

    data = data_set(name)
    columns = [str(n) for n in data.feature_names][:6]
    rows = data.data[:, : len(columns)]
    target = np.asarray(data.target).reshape(len(rows), -1)[:, 0]
    header = ["", *columns, "target"]
    first_row = int(rng.integers(0, len(rows) - 40))
    shown = [[str(first_row + i), *(f"{v:.4g}" for v in row), f"{target[first_row + i]:.4g}"]
             for i, row in enumerate(rows[first_row : first_row + 30])]
    cell_font, head_font = sans(12), sans(12, bold=True)
    widths = [max(head_font.getlength(h), *(cell_font.getlength(r[c]) for r in shown)) + 18
              for c, h in enumerate(header)]
    row_height, margin = 22, 90
    chart = chart_image(name, 660, 300)
    page = Image.new("RGB", (SCREEN_WIDTH, 120 + row_height * (len(shown) + 1) + 60 + chart.shape[0] + 40),
                     (255, 255, 255))
    draw = ImageDraw.Draw(page)

    def cell(y: int, number: int, code: str) -> None:
        draw.text((12, y + 6), f"In [{number}]:", fill=(48, 63, 159), font=mono(13))
        draw.rectangle([margin - 6, y, SCREEN_WIDTH - 20, y + 30], fill=(245, 245, 245), outline=(224, 224, 224))
        draw.text((margin, y + 7), code, fill=(33, 33, 33), font=mono(13))

    cell(16, 2, f"df = pd.DataFrame(load_{name}().data)  # rows {first_row}..{first_row + 29}")
    y = 66
    draw.text((12, y), "Out[2]:", fill=(216, 67, 21), font=mono(13))
    x = margin
    for c, h in enumerate(header):
        draw.text((x + 6, y + 3), h, fill=(0, 0, 0), font=head_font)
        x += widths[c]
    draw.line([margin, y + row_height, x, y + row_height], fill=(0, 0, 0))
    for i, row in enumerate(shown):
        ry = y + row_height * (i + 1)
        if i % 2 == 0:
            draw.rectangle([margin, ry + 1, x, ry + row_height], fill=(245, 245, 245))
        cx = margin
        for c, value in enumerate(row):
            draw.text((cx + 6, ry + 4), value, fill=(0, 0, 0), font=head_font if c == 0 else cell_font)
            cx += widths[c]
    y += row_height * (len(shown) + 1) + 30
    cell(y, 3, "plot_overview(df)")
    page.paste(Image.fromarray(chart), (margin, y + 40))
    return page


def render_data(source: ScreenSource, rng: np.random.Generator, frames: int, clip_index: int
                ) -> tuple[list[np.ndarray], str | None]:
    """A notebook page: the data set's first rows as a table, then its charts; scrolled down through it."""
    from PIL import Image, ImageDraw

    page = notebook_page(source.name, rng)
    theme = {"chrome": (222, 222, 222), "fg": (40, 40, 40)}
    top = 30 + 28
    view_height = SCREEN_HEIGHT - top
    start = int(rng.integers(0, max(1, page.height - view_height - 260)))
    offsets = scroll_offsets(rng, frames, 40, page.height - view_height - start)
    pointer = pointer_path(rng, frames)
    out = []
    for t in range(frames):
        frame = Image.new("RGB", (SCREEN_WIDTH, SCREEN_HEIGHT), (255, 255, 255))
        frame.paste(page.crop((0, start + offsets[t], SCREEN_WIDTH, start + offsets[t] + view_height)), (0, top))
        draw = ImageDraw.Draw(frame)
        title_bar(draw, f"{source.name}.ipynb - Notebook", theme)
        draw.rectangle([0, 30, SCREEN_WIDTH, top], fill=(245, 245, 245))
        for i, menu in enumerate(["File", "Edit", "View", "Run", "Kernel", "Help"]):
            draw.text((12 + 56 * i, 36), menu, fill=(60, 60, 60), font=sans(12))
        draw_pointer(draw, *pointer[t])
        out.append(np.asarray(frame))
    return out, None


# ----------------------------------------------------------------------------------------------- slides
def docstring_slides(folder: str) -> list[tuple[str, list[str]]]:
    """(title, bullets) for each module of a vidtempo folder that has a docstring: its first line and the
    sentences after it."""
    slides = []
    for path in python_files(folder):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        if not doc:
            continue
        paragraphs = [" ".join(p.split()).replace("``", "") for p in doc.split("\n\n")]  # no reST markup
        sentences = [s.strip() for p in paragraphs[1:] for s in p.replace("; ", ". ").split(". ") if s.strip()]
        slides.append((f"vidtempo.{folder}.{path.stem}", [paragraphs[0], *sentences][:6]))
    return slides


def render_slides(source: ScreenSource, rng: np.random.Generator, frames: int, clip_index: int
                  ) -> tuple[list[np.ndarray], str | None]:
    """A presentation: a slide's bullets appear one by one, then the next slide comes."""
    from PIL import Image, ImageDraw

    slides = docstring_slides(source.name)
    first = (clip_index + int(rng.integers(len(slides)))) % len(slides)
    palettes = [((255, 255, 255), (33, 33, 33), (21, 101, 192)), ((250, 246, 235), (50, 40, 30), (191, 54, 12)),
                ((38, 50, 56), (236, 239, 241), (128, 203, 196)), ((245, 247, 250), (30, 30, 30), (46, 125, 50))]
    bg, ink, accent = palettes[int(rng.integers(len(palettes)))]
    change_at = int(rng.integers(max(1, frames // 3), max(2, frames - 2)))  # a slide change within the clip
    pointer = pointer_path(rng, frames)
    out = []
    for t in range(frames):
        number = first if t < change_at else (first + 1) % len(slides)
        title, bullets = slides[number]
        since = t if t < change_at else t - change_at
        frame = Image.new("RGB", (SCREEN_WIDTH, SCREEN_HEIGHT), bg)
        draw = ImageDraw.Draw(frame)
        draw.rectangle([0, 0, SCREEN_WIDTH, 70], fill=accent)
        draw.text((36, 20), title, fill=bg, font=sans(26, bold=True))
        y = 96
        for bullet in bullets[: 1 + since // 3]:
            wrapped = textwrap.wrap(bullet, 62)[:3]
            draw.ellipse([40, y + 8, 48, y + 16], fill=accent)
            for line in wrapped:
                draw.text((62, y), line, fill=ink, font=sans(20))
                y += 28
            y += 10
            if y > SCREEN_HEIGHT - 60:
                break
        draw.text((SCREEN_WIDTH - 70, SCREEN_HEIGHT - 32), f"{number + 1} / {len(slides)}", fill=ink, font=sans(14))
        draw_pointer(draw, *pointer[t])
        out.append(np.asarray(frame))
    return out, None


RENDERERS = {"code": render_code, "docs": render_docs, "data": render_data, "slides": render_slides}


def screen_clip(source: ScreenSource, rng: np.random.Generator, frames: int, clip_index: int = 0
                ) -> tuple[list[np.ndarray], str | None]:
    """A clip of ``frames`` RGB frames (SCREEN_HEIGHT x SCREEN_WIDTH) and the exact text it shows (a file, a
    module's documentation or a data set)."""
    return RENDERERS[source.kind](source, rng, frames, clip_index)
