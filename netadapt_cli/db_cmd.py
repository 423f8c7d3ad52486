"""`netadapt db`: list, show, verify, diff, export, import and browse LUT versions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from bench.agreement import agreement
from bench.devices import BackendName
from lut_db.errors import LutError, VersionTampered
from lut_db.store import LutStore, open_lut
from lut_db.transfer import ExportFormat
from lut_db.versions import Version, parse_lut_ref
from netadapt_cli.common import (
    CHECK_FAILED,
    HELP_MARKUP,
    Command,
    backend_choice,
    console,
    err_console,
    fail,
    lut_arg,
    user_errors,
)

app = typer.Typer(help="Inspect and move LUT versions (mirrors lut_db.store.LutStore).",
                  no_args_is_help=True, rich_markup_mode=HELP_MARKUP)

# The LUT was a positional argument here before it was --lut on every verb: still taken,
# hidden, with a warning, for one release.
OLD_LUT_HELP = "Old spelling of --lut (positional)."


def _lut_option(help_text: str) -> str | None:
    return typer.Option(None, "--lut", help=help_text, show_default=False)


def _old_lut() -> str | None:
    return typer.Argument(None, hidden=True, help=OLD_LUT_HELP, show_default=False)


def _lut(lut: str | None, old: str | None, verb: str) -> str:
    return lut_arg(lut, old, f"netadapt db {verb} LUT", f"netadapt db {verb} --lut LUT")


def _json_option() -> bool:
    return typer.Option(False, "--json", help="Machine-readable output.")


@app.command("list", cls=Command)
def list_(lut: str | None = _lut_option("LUT file, e.g. luts/host.db"),
          old: str | None = _old_lut(), as_json: bool = _json_option()) -> None:
    """List the versions of a LUT file."""
    with user_errors(as_json):
        store = LutStore.open(_lut(lut, old, "list"))
        rows = [(v, store.counts(v)) for v in store.versions()]
        if as_json:
            print(json.dumps([{**vars(v), "entries": c.get("ok", 0), "failed": c.get("failed", 0)}
                              for v, c in rows], indent=1, default=str))
            return
        t = Table("id", "device", "backend", "status", "entries", "failed", "created", "note")
        for v, c in rows:
            t.add_row(str(v.id), v.device, v.backend, v.status, str(c.get("ok", 0)),
                      str(c.get("failed", 0)), v.created, v.note)
        console.print(t)


@app.command(cls=Command)
def show(lut: str | None = _lut_option("LUT[@VERSION], e.g. luts/host.db@1"),
         old: str | None = _old_lut(),
         entries: int = typer.Option(10, help="How many entries to list."),
         as_json: bool = _json_option()) -> None:
    """Show a version: fingerprint, counts, failures and a few entries."""
    with user_errors(as_json):
        store, v = open_lut(_lut(lut, old, "show"))
        counts, failures = store.counts(v), store.failures(v)
        rows = store.entries(v)
        if as_json:
            print(json.dumps({"version": vars(v), "counts": counts, "failures": failures,
                              "stats": store.stats(v), "agreement": agreement(store, v)},
                             indent=1, default=str))
            return
        console.print(f"[bold]{v.label}[/] {v.backend} \\[{v.status}] created {v.created}"
                      f"{', sealed ' + v.sealed if v.sealed else ''}"
                      f"{', parent ' + str(v.parent) if v.parent else ''}", highlight=False)
        console.print(f"entries: {counts.get('ok', 0)} ok, {counts.get('failed', 0)} failed")
        console.print("fingerprint: " + json.dumps(v.fingerprint, sort_keys=True))
        if v.space:
            console.print("space: " + json.dumps(v.space))
        seal = store.seal_info(v)
        if seal:
            console.print(f"digest: sha256 {seal.digest[:16]}... over {seal.rows} entries and "
                          f"the fingerprint ({seal.origin} {seal.at})", highlight=False)
        for name, value in store.stats(v).items():
            console.print(f"{name}: {value:.2f}")
        for state in store.stat_detail(v, "machine_busy") or []:
            console.print(f"machine while swept: {state.get('summary', '')}"
                          + (f" (busy: {'; '.join(state.get('reasons', []))})"
                             if state.get("busy") else ""), highlight=False, markup=False)
        agree = agreement(store, v)
        if agree["phones"]:
            t = Table("phone", "keys", "median ratio", "p5", "p95",
                      title="agreement: each phone / the farm median, on the replica sample")
            for ph in agree["phones"]:
                t.add_row(ph["serial"], str(ph["keys"]), f"{ph['median_ratio']:.3f}",
                          f"{ph['p5']:.3f}", f"{ph['p95']:.3f}")
            console.print(t)
        if failures:
            t = Table("failed key", "error", title="failures")
            for f in failures:
                t.add_row(f["key"], f["error"])
            console.print(t)
        t = Table("key", "ms", "std %", "runs", title=f"first {entries} entries")
        for r in [r for r in rows if r["status"] == "ok"][:entries]:
            # An imported CSV may hold the latency alone: show what is there.
            std = (f"{100 * r['std_us'] / r['mean_us']:.1f}"
                   if r["std_us"] is not None and r["mean_us"] else "-")
            t.add_row(r["key"], f"{r['latency_us'] / 1000:.3f}", std, str(r["runs"] or "-"))
        console.print(t)


@app.command(cls=Command)
def verify(lut: str | None = _lut_option("LUT[@VERSION]; without @: every sealed version of "
                                         "the file"),
           old: str | None = _old_lut(), as_json: bool = _json_option()) -> None:
    """Check sealed versions against the digest taken when they were sealed (every entry);
    exit 3 when one changed."""
    with user_errors(as_json):
        path, vid = parse_lut_ref(_lut(lut, old, "verify"))
        store = LutStore.open(path)
        ids = [vid] if vid is not None else [v.id for v in store.versions()
                                              if v.status == "sealed"]
        if not ids:
            fail(f"{path} has no sealed version to verify")
        results = [_verify_one(store, i) for i in ids]
    if as_json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            if r["status"] == "changed":
                err_console.print(f"[red]{path}@{r['version']}: changed:[/] "
                                  f"{escape(r['problem'])}", highlight=False, soft_wrap=True)
            elif r["status"] == "building":
                console.print(f"{path}@{r['version']}: building, not sealed yet: nothing to "
                              "verify")
            else:
                note = ", digest taken at migration" if r["origin"] == "migrated" else ""
                console.print(f"{path}@{r['version']}: ok, {r['rows']} entries match sha256 "
                              f"{r['digest'][:16]}...{note}", highlight=False)
    if any(r["status"] == "changed" for r in results):
        raise typer.Exit(CHECK_FAILED)


def _verify_one(store: LutStore, vid: int) -> dict:
    """One version's check as a row; a version that changed is a finding, not an error."""
    try:
        seal = store.verify(store.version(vid))
    except VersionTampered as e:
        return {"version": vid, "status": "changed", "problem": str(e)}
    if seal is None:
        return {"version": vid, "status": "building"}
    return {"version": vid, "status": "ok", "rows": seal.rows, "digest": seal.digest,
            "origin": seal.origin}


@app.command(cls=Command)
def diff(lut: str | None = _lut_option("LUT@VERSION: the version a."),
         other: list[str] = typer.Argument(None, metavar="B", show_default=False,
                                           help="The version b: VERSION or LUT@VERSION (same "
                                           "file)."),
         as_json: bool = _json_option()) -> None:
    """Per-key latency ratios b / a between two versions of one LUT file."""
    with user_errors(as_json):
        other = other or []
        if lut is None and len(other) == 2:  # the old spelling: db diff A B
            a, b = lut_arg(None, other[0], "netadapt db diff A B",
                           "netadapt db diff --lut A B"), other[1]
        elif len(other) == 1 and lut is not None:
            a, b = lut, other[0]
        else:
            raise typer.BadParameter("give --lut LUT@VERSION and the version to compare with, "
                                     "e.g. netadapt db diff --lut luts/host.db@1 2")
        store, va = open_lut(a)
        if b.isdigit():
            vb = store.version(int(b))
        else:
            path_b, vid_b = parse_lut_ref(b)
            if path_b.resolve() != store.path.resolve():
                fail(f"diff compares two versions of one file; {path_b} is not {store.path} "
                     "(export one and import it into the other to compare across files)")
            vb = store.version(vid_b)
        d = store.diff(va, vb)
        s = d.summary()
        if as_json:
            print(json.dumps(s, indent=1))
            return
        if not d.common:
            fail(f"versions {va.id} and {vb.id} have no key in common")
        console.print(f"{va.label} -> {vb.label}: {d.common} common keys, {len(d.only_a)} only "
                      f"in {va.id}, {len(d.only_b)} only in {vb.id}")
        console.print(f"ratio b/a: median {s['median_ratio']:.3f}, p5 {s['p5']:.3f}, "
                      f"p95 {s['p95']:.3f}, min {s['min']:.3f}, max {s['max']:.3f}; "
                      f"{100 * s['within_5pct']:.0f}% of keys within +-5%")


@app.command(cls=Command)
def export(lut: str | None = _lut_option("LUT[@VERSION]"), old: str | None = _old_lut(),
           fmt: ExportFormat | None = typer.Option(
               None, "--format", show_default=False, help="JSON with the version's metadata, "
               "or CSV of the entries (default: CSV when -o names a .csv file, else JSON)."),
           output: Path | None = typer.Option(None, "-o", help="File (default stdout).")) -> None:
    """Export a version (JSON with metadata, or CSV of entries)."""
    if fmt is None:  # as `db import` reads it back: by the file's suffix
        csv = output is not None and output.suffix.lower() == ".csv"
        fmt = ExportFormat.CSV if csv else ExportFormat.JSON
    with user_errors():
        store, v = open_lut(_lut(lut, old, "export"))
        text = store.export(v, fmt)
        if output:
            try:
                output.write_text(text)
            except OSError as e:
                raise LutError(f"cannot write {output}: {e.strerror}") from None
            console.print(f"wrote {output}")
        else:
            sys.stdout.write(text)


@app.command("import", cls=Command)
def import_(lut: Path | None = typer.Option(None, "--lut", show_default=False,
                                           help="LUT file to import into (created if new)."),
            sources: list[Path] = typer.Argument(..., metavar="SOURCE", help="An export "
                                                 "(.json or .csv)."),
            device: str | None = typer.Option(None, help="Device of the import (a CSV has "
                                              "none; default: the export's)."),
            backend: BackendName | None = backend_choice("Backend of the import (a CSV "
                                                         "has none; default: the export's)."),
            as_json: bool = _json_option()) -> None:
    """Import an exported version as a new sealed version."""
    with user_errors(as_json):
        if lut is None and len(sources) == 2:  # the old spelling: db import DB SOURCE
            old = lut_arg(None, str(sources[0]), "netadapt db import DB SOURCE",
                          "netadapt db import --lut DB SOURCE")
            db, source = Path(old), sources[1]
        elif len(sources) == 1 and lut is not None:
            db, source = lut, sources[0]
        else:
            raise typer.BadParameter("give --lut FILE and one export, e.g. netadapt db import "
                                     "--lut luts/host.db v1.json")
        v, n = _import_into(db, source, device, backend)
        if as_json:
            print(json.dumps({"lut": str(db), "version": v.id, "entries": n}))
        else:
            console.print(f"imported {n} entries as {db}@{v.id}")


def _import_into(db: Path, source: Path, device: str | None, backend: BackendName | None
                 ) -> tuple[Version, int]:
    """``source`` imported into ``db`` as a new version, and its ok entries. A file that is
    not a LUT is refused before the export is read; a file this import created is removed
    if it fails, so a refused export leaves no empty LUT behind."""
    fmt = ExportFormat.CSV if source.suffix == ".csv" else ExportFormat.JSON
    new = not db.exists()
    try:
        with LutStore.open(db, create=True) as store:
            try:
                text = source.read_text()
            except UnicodeDecodeError:
                raise LutError(f"{source} is not a text file; an import is a .json or .csv "
                               "written by netadapt db export") from None
            v = store.import_(text, fmt, device=device, backend=backend)
            return v, store.counts(v).get("ok", 0)
    except BaseException:
        if new:
            for leftover in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm"))):
                leftover.unlink(missing_ok=True)
        raise


@app.command(cls=Command)
def browse(lut: str | None = _lut_option("LUT file."), old: str | None = _old_lut()) -> None:
    """Open the LUT in Datasette (pip install datasette)."""
    with user_errors():
        db = _lut(lut, old, "browse")
        LutStore.open(db)
        exe = shutil.which("datasette")
        if not exe:
            fail("Datasette is not installed: pip install datasette")
        subprocess.run([exe, str(db)], check=False)
