//! Embeds the built-in rule files (rules/builtin/*.yaml at the top of the
//! repository) so the installed binary carries them: rules are files in
//! the repository, not code, and still need no files at run time.

use std::path::Path;

fn main() {
    // Watched by paths relative to this crate, which cargo resolves in the
    // checkout being built: a target directory shared by two checkouts
    // (CI's, a worktree's) shares this script's output too, and an
    // absolute path would watch the other checkout's files.
    let rel = Path::new("../../rules/builtin");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    println!("cargo:rerun-if-changed={}", rel.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && !n.starts_with('.'))
        .collect();
    names.sort();
    let mut out = String::from("pub(crate) const BUILTIN: &[(&str, &str)] = &[\n");
    for n in &names {
        let p = dir.join(n);
        println!("cargo:rerun-if-changed={}", rel.join(n).display());
        out.push_str(&format!(
            "    ({n:?}, include_str!({:?})),\n",
            p.canonicalize().expect("rule file").display().to_string()
        ));
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("builtin.rs");
    std::fs::write(dest, out).expect("writing builtin.rs");
}
