"""The text of `cgotrace inspect`: a sectioned report of `StaticFacts.to_dict()`."""

from __future__ import annotations

from typing import Any


def _yn(v: bool) -> str:
    return "yes" if v else "no"


def render_text(d: dict[str, Any]) -> str:
    """A sectioned report a developer can read in ten seconds."""
    out: list[str] = [f"{d['path']}  ({d['size']:,} bytes)"]
    e = d["elf"]
    link = "static" if d["static"] else "dynamic"
    kind = ("PIE" if d["pie"] else "shared object" if e["etype"] == "ET_DYN" else
            "executable")
    out += ["", "ELF",
            f"  {e['machine'].removeprefix('EM_').lower()} {e['elfclass']}-bit {kind}, {link}"
            f"ally linked{', libc: ' + e['libc'] if e['libc'] else ''}",
            f"  interpreter   {d['interpreter'] or '-'}",
            f"  needed        {', '.join(d['needed']) or '-'}"]
    if e["rpath"] or e["runpath"]:
        rp, rn = ":".join(e["rpath"]) or "-", ":".join(e["runpath"]) or "-"
        out.append(f"  rpath/runpath {rp} / {rn}")
    out.append(f"  stripped      {_yn(d['stripped'])} (DWARF {_yn(e['dwarf'])}), UPX "
               f"{_yn(e['upx'])}")
    if e["gnu_build_id"] or e["go_build_id"]:
        gnu, go_id = e["gnu_build_id"] or "-", e["go_build_id"] or "-"
        out.append(f"  build id      {gnu} (GNU), {go_id} (Go)")
    if e["imports"]:
        shown = ", ".join(e["imports"][:12]) + (" ..." if len(e["imports"]) > 12 else "")
        out.append(f"  imports       {len(e['imports'])}: {shown}")
    g = d["go"]
    out += ["", "Go"]
    if not d["is_go"]:
        out.append("  not a Go binary")
    elif g is not None:
        out.append(f"  version       {g['version'] or '?'}   main {g['path'] or '?'} "
                   f"({g['main'] or '?'})")
        s = g["settings"]
        keys = ("CGO_ENABLED", "-tags", "-ldflags", "-buildmode", "DefaultGODEBUG", "GOAMD64")
        for k in keys:
            if k not in s:
                continue
            value = s[k]
            if k == "DefaultGODEBUG":  # long; only what changes resolver choice matters here
                netdns = [i for i in value.split(",") if i.startswith("netdns=")]
                value = ", ".join(netdns) or f"({value.count(',') + 1} settings, no netdns)"
            out.append(f"  {k:<13} {value}")
        if g["nfunc"] is not None:
            out.append(f"  pclntab       {g['nfunc']:,} functions, text at {g['text_start']}")
        if g["deps"]:
            out.append(f"  deps          {len(g['deps'])} modules")
    c = d["cgo"]
    out += ["", "cgo",
            f"  runtime/cgo   {'linked' if c['linked'] else 'not linked'}"
            + (f" ({', '.join(c['evidence'][:3])})" if c["evidence"] else ""),
            f"  cgo packages  {', '.join(c['packages']) or '-'}"]
    if c["c_imports"]:
        out.append(f"  C calls       {', '.join(c['c_imports'])}")
    if d["is_go"]:
        out.append(f"  net resolver  {d['resolver']['implementation']}: "
                   f"{d['resolver']['reason']}")
        out.append(f"  os/user       {d['user_lookup']['implementation']}: "
                   f"{d['user_lookup']['reason']}")
    if d["features"]:
        out += ["", "Predicted run-time dependencies (from the knowledge base; a trace "
                "confirms them)"]
        for f in d["features"]:
            paths = [p["path"] for p in f["predictions"]]
            out.append(f"  {f['title']} [{f['form']}]")
            for p in paths:
                out.append(f"    {p}")
            out.append(f"    fix: {f['fix']}")
    if d["hazards"]:
        out += ["", "HAZARDS"] + [f"  ! {h}" for h in d["hazards"]]
    lo = d["loader"]
    title = f"Rootfs check ({d['rootfs']})" if d["rootfs"] else "Loader (this host)"
    out += ["", title]
    if lo["flavor"] == "none":
        out.append("  static: no interpreter, no libraries to find")
    else:
        out.append(f"  interpreter   {lo['interpreter']} -> "
                   f"{lo['interpreter_path'] or 'MISSING'}")
        sp = lo.get("search_path")
        if sp:
            out.append(f"  search path   {', '.join(sp['dirs'])} ({sp['detail']})")
        for lib in lo["libraries"]:
            where = lib["path"] or "MISSING"
            out.append(f"  {lib['name']:<13} -> {where} ({lib['via']}, needed by "
                       f"{lib['needed_by'].rsplit('/', 1)[-1]})")
    for p in d["problems"]:
        out.append(f"  ! {p}")
    if not d["problems"] and lo["flavor"] != "none":
        out.append("  ok: the loader finds everything it needs")
    if d["notes"]:
        out += ["", "Notes"] + [f"  - {n}" for n in d["notes"]]
    return "\n".join(out)
