"""`netadapt db`: list, show, verify, diff, export, import and browse LUT versions."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import typer
from rich.table import Table

from bench.agreement import agreement
from lut_db.store import LutStore, open_lut, parse_lut_ref
from netadapt_cli.common import console, fail, user_errors

app = typer.Typer(help="Inspect and move LUT versions (mirrors lut_db.store.LutStore).",
                  no_args_is_help=True)


@app.command("list")
def list_(db: Path = typer.Argument(..., help="LUT file, e.g. luts/host.db")) -> None:
    """List the versions of a LUT file."""
    with user_errors():
        store = LutStore.open(db)
        t = Table("id", "device", "backend", "status", "entries", "failed", "created", "note")
        for v in store.versions():
            c = store.counts(v.id)
            t.add_row(str(v.id), v.device, v.backend, v.status, str(c.get("ok", 0)),
                      str(c.get("failed", 0)), v.created, v.note)
        console.print(t)


@app.command()
def show(lut: str = typer.Argument(..., help="LUT[@VERSION], e.g. luts/host.db@1"),
         entries: int = typer.Option(10, help="How many entries to list."),
         as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Show a version: fingerprint, counts, failures and a few entries."""
    with user_errors(as_json):
        store, v = open_lut(lut)
        counts, failures = store.counts(v.id), store.failures(v.id)
        rows = store.entries(v.id)
        if as_json:
            print(json.dumps({"version": vars(v), "counts": counts, "failures": failures,
                              "stats": store.stats(v.id), "agreement": agreement(store, v.id)},
                             indent=1, default=str))
            return
        console.print(f"[bold]{v.label}[/] {v.backend} \\[{v.status}] created {v.created}"
                      f"{', sealed ' + v.sealed if v.sealed else ''}"
                      f"{', parent ' + str(v.parent) if v.parent else ''}", highlight=False)
        console.print(f"entries: {counts.get('ok', 0)} ok, {counts.get('failed', 0)} failed")
        console.print("fingerprint: " + json.dumps(v.fingerprint, sort_keys=True))
        if v.space:
            console.print("space: " + json.dumps(v.space))
        seal = store.seal_info(v.id)
        if seal:
            console.print(f"digest: sha256 {seal.digest[:16]}... over {seal.rows} entries and "
                          f"the fingerprint ({seal.origin} {seal.at})", highlight=False)
        for name, value in store.stats(v.id).items():
            console.print(f"{name}: {value:.2f}")
        for state in store.stat_detail(v.id, "machine_busy") or []:
            console.print(f"machine while swept: {state.get('summary', '')}"
                          + (f" (busy: {'; '.join(state.get('reasons', []))})"
                             if state.get("busy") else ""), highlight=False, markup=False)
        agree = agreement(store, v.id)
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


@app.command()
def verify(lut: str = typer.Argument(..., help="LUT[@VERSION]; without @: every sealed "
                                     "version of the file")) -> None:
    """Check sealed versions against the digest taken when they were sealed (every entry)."""
    with user_errors():
        path, vid = parse_lut_ref(lut)
        store = LutStore.open(path)
        ids = [vid] if vid is not None else [v.id for v in store.versions()
                                              if v.status == "sealed"]
        if not ids:
            fail(f"{path} has no sealed version to verify")
        for i in ids:
            seal = store.verify(i)
            if seal is None:
                console.print(f"{path}@{i}: building, not sealed yet: nothing to verify")
                continue
            note = ", digest taken at migration" if seal.origin == "migrated" else ""
            console.print(f"{path}@{i}: ok, {seal.rows} entries match sha256 "
                          f"{seal.digest[:16]}...{note}", highlight=False)


@app.command()
def diff(a: str = typer.Argument(..., help="LUT@VERSION"),
         b: str = typer.Argument(..., help="VERSION or LUT@VERSION (same file)"),
         as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Per-key latency ratios b / a between two versions of one LUT file."""
    with user_errors(as_json):
        store, va = open_lut(a)
        if b.isdigit():
            vb = store.version(int(b))
        else:
            path_b, vid_b = parse_lut_ref(b)
            if path_b.resolve() != store.path.resolve():
                fail(f"diff compares two versions of one file; {path_b} is not {store.path} "
                     "(export one and import it into the other to compare across files)")
            vb = store.version(vid_b)
        d = store.diff(va.id, vb.id)
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


@app.command()
def export(lut: str = typer.Argument(..., help="LUT[@VERSION]"),
           fmt: str = typer.Option("json", "--format", help="json or csv"),
           output: Path | None = typer.Option(None, "-o", help="File (default stdout).")) -> None:
    """Export a version (JSON with metadata, or CSV of entries)."""
    with user_errors():
        store, v = open_lut(lut)
        text = store.export(v.id, fmt)
        if output:
            output.write_text(text)
            console.print(f"wrote {output}")
        else:
            sys.stdout.write(text)


@app.command("import")
def import_(db: Path = typer.Argument(..., help="LUT file to import into (created if new)"),
            source: Path = typer.Argument(..., help="an export (.json or .csv)"),
            device: str | None = typer.Option(None, help="Device of the import (a CSV has "
                                              "none; default: the export's)."),
            backend: str | None = typer.Option(None, help="Backend of the import (a CSV has "
                                               "none; default: the export's).")) -> None:
    """Import an exported version as a new sealed version."""
    with user_errors():
        fmt = "csv" if source.suffix == ".csv" else "json"
        store = LutStore.open(db, create=True)
        v = store.import_(source.read_text(), fmt, device=device, backend=backend)
        console.print(f"imported {store.counts(v.id).get('ok', 0)} entries as {db}@{v.id}")


@app.command()
def browse(db: Path = typer.Argument(..., help="LUT file")) -> None:
    """Open the LUT in Datasette (pip install datasette)."""
    with user_errors():
        LutStore.open(db)
        exe = shutil.which("datasette")
        if not exe:
            fail("Datasette is not installed: pip install datasette")
        subprocess.run([exe, str(db)], check=False)
