//! Generates the Rust view of `include/kestrel_abi.h`, the header the BPF
//! programs are compiled against, so the two sides cannot drift apart: the
//! record layouts (bindgen) and the table of kinds (`KESTREL_KINDS`, read
//! through the C preprocessor and written out as Rust, see `kinds.rs`).

use std::env;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn main() {
    let header = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("include")
        .join("kestrel_abi.h");
    // Relative, so cargo resolves it in the checkout being built (see
    // crates/detect/build.rs).
    println!("cargo:rerun-if-changed=include/kestrel_abi.h");
    println!("cargo:rerun-if-env-changed=CLANG");
    // Lets the probes crate find the header through DEP_KESTREL_ABI_INCLUDE.
    println!(
        "cargo:include={}",
        header.parent().unwrap().to_str().unwrap()
    );
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());

    let bindings = match bindgen::Builder::default()
        .header(header.to_str().unwrap())
        .allowlist_type("kestrel_.*")
        .allowlist_var("KESTREL_.*")
        .prepend_enum_name(false)
        .derive_default(true)
        .derive_debug(false)
        .layout_tests(true)
        .generate()
    {
        Ok(b) => b,
        Err(e) => fail(&format!(
            "bindgen could not read {}: {e}\n\
             Kestrel needs clang's libclang and the kernel's uapi headers: \
             apt-get install clang libclang-dev linux-libc-dev",
            header.display()
        )),
    };
    bindings
        .write_to_file(out.join("abi.rs"))
        .expect("write abi.rs");

    let table = Table::parse(&expand(&header));
    std::fs::write(out.join("kinds.rs"), table.rust()).expect("write kinds.rs");
}

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1);
}

/// The table's macros expanded by the C preprocessor, which deals with the
/// header's comments, line continuations and string concatenation:
/// `KIND(...) ... STATE(PROG(...) ...)`, the row macros left as written.
fn expand(header: &Path) -> String {
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_string());
    let mut child = Command::new(&clang)
        .args(["-E", "-P", "-x", "c", "-imacros"])
        .arg(header)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail(&format!("running {clang}: {e} (apt-get install clang)")));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"KESTREL_KINDS(KIND)\nSTATE(KESTREL_STATE_PROGRAMS)\n")
        .unwrap();
    let done = child.wait_with_output().unwrap();
    if !done.status.success() {
        fail(&format!("{clang} -E could not read {}", header.display()));
    }
    String::from_utf8(done.stdout).unwrap()
}

#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Punct(char),
}

/// Identifiers, string literals (adjacent ones joined, as C does) and
/// punctuation: all the table's rows are made of.
fn tokens(src: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut chars = src.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c == '"' {
            let mut s = String::new();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(e @ ('"' | '\\')) => s.push(e),
                        Some('n') => s.push('\n'),
                        e => fail(&format!("KESTREL_KINDS: escape \\{e:?} in a string")),
                    },
                    Some(c) => s.push(c),
                    None => fail("KESTREL_KINDS: unterminated string"),
                }
            }
            match toks.last_mut() {
                Some(Tok::Str(prev)) => prev.push_str(&s),
                _ => toks.push(Tok::Str(s)),
            }
        } else if c.is_ascii_alphanumeric() || c == '_' {
            let mut s = String::from(c);
            while let Some(&c) = chars
                .peek()
                .filter(|c| c.is_ascii_alphanumeric() || **c == '_')
            {
                s.push(c);
                chars.next();
            }
            toks.push(Tok::Ident(s));
        } else {
            toks.push(Tok::Punct(c));
        }
    }
    toks
}

struct Prog {
    name: String,
    hook: String,
    /// (tracefs event, what is not seen without it)
    needs: Option<(String, String)>,
}

struct Row {
    /// `EXEC`
    upper: String,
    /// `exec`
    name: String,
    /// `Exec`
    camel: String,
    data_types: Vec<String>,
    programs: Vec<Prog>,
    also: Vec<String>,
}

struct Table {
    rows: Vec<Row>,
    state: Vec<Prog>,
}

struct Parser {
    toks: std::vec::IntoIter<Tok>,
    /// The row being read, for errors.
    at: String,
}

impl Parser {
    fn next(&mut self, what: &str) -> Tok {
        match self.toks.next() {
            Some(t) => t,
            None => self.error(&format!("expected {what}, found the end")),
        }
    }

    fn error(&self, msg: &str) -> ! {
        fail(&format!(
            "include/kestrel_abi.h, KESTREL_KINDS, {}: {msg} (each row is \
             KIND(ENUM, name, (\"data_type\", ...), (PROG(...) ...)), see the \
             comment above it)",
            self.at
        ))
    }

    fn ident(&mut self, what: &str) -> String {
        match self.next(what) {
            Tok::Ident(s) => s,
            t => self.error(&format!("expected {what}, found {t:?}")),
        }
    }

    fn string(&mut self, what: &str) -> String {
        match self.next(what) {
            Tok::Str(s) => s,
            t => self.error(&format!("expected {what} (a string), found {t:?}")),
        }
    }

    fn punct(&mut self, p: char) {
        match self.next(&format!("'{p}'")) {
            Tok::Punct(c) if c == p => {}
            t => self.error(&format!("expected '{p}', found {t:?}")),
        }
    }

    /// `(PROG(...) PROG_NEEDS(...) ALSO(...) ...)`, the `(` already read.
    fn programs(&mut self, also: Option<&mut Vec<String>>) -> Vec<Prog> {
        let mut also = also;
        let mut progs = Vec::new();
        loop {
            let macro_name = match self.next("a program or ')'") {
                Tok::Punct(')') => return progs,
                Tok::Ident(s) => s,
                t => self.error(&format!("expected a program, found {t:?}")),
            };
            self.punct('(');
            let name = self.ident("a program's function name");
            match (macro_name.as_str(), also.as_deref_mut()) {
                ("ALSO", Some(also)) => also.push(name),
                ("PROG", _) => {
                    self.punct(',');
                    let hook = self.string("its SEC()");
                    progs.push(Prog {
                        name,
                        hook,
                        needs: None,
                    });
                }
                ("PROG_NEEDS", _) => {
                    self.punct(',');
                    let hook = self.string("its SEC()");
                    self.punct(',');
                    let event = self.string("the tracefs event it needs");
                    self.punct(',');
                    let without = self.string("what is not seen without it");
                    progs.push(Prog {
                        name,
                        hook,
                        needs: Some((event, without)),
                    });
                }
                (m, _) => self.error(&format!("{m}({name}) is not PROG, PROG_NEEDS or ALSO")),
            }
            self.punct(')');
        }
    }

    fn row(&mut self) -> Row {
        self.punct('(');
        let upper = self.ident("the kind's ENUM");
        self.at = format!("the row of {upper}");
        self.punct(',');
        let name = self.ident("the kind's name");
        if name.to_ascii_uppercase() != upper || name.to_ascii_lowercase() != name {
            self.error(&format!("the name must be ENUM in lower case, not {name}"));
        }
        self.punct(',');
        self.punct('(');
        let mut data_types = vec![self.string("a data_type")];
        loop {
            match self.next("',' or ')'") {
                Tok::Punct(')') => break,
                Tok::Punct(',') => data_types.push(self.string("a data_type")),
                t => self.error(&format!(
                    "expected ',' or ')' after a data_type, found {t:?}"
                )),
            }
        }
        self.punct(',');
        self.punct('(');
        let mut also = Vec::new();
        let programs = self.programs(Some(&mut also));
        self.punct(')');
        let camel = name
            .split('_')
            .map(|w| w[..1].to_ascii_uppercase() + &w[1..])
            .collect();
        Row {
            upper,
            name,
            camel,
            data_types,
            programs,
            also,
        }
    }
}

impl Table {
    fn parse(expanded: &str) -> Table {
        let mut p = Parser {
            toks: tokens(expanded).into_iter(),
            at: "its first row".into(),
        };
        let mut rows = Vec::new();
        loop {
            match p.ident("KIND or STATE").as_str() {
                "KIND" => rows.push(p.row()),
                "STATE" => break,
                s => p.error(&format!("expected KIND, found {s}")),
            }
        }
        p.at = "KESTREL_STATE_PROGRAMS".into();
        p.punct('(');
        let state = p.programs(None);
        if let Some(t) = p.toks.next() {
            p.error(&format!("unexpected {t:?} after the table"));
        }
        if rows.is_empty() {
            p.error("no rows");
        }
        let table = Table { rows, state };
        table.check(&mut p);
        table
    }

    /// What the compiler cannot see in the generated code: names and
    /// programs listed twice, an ALSO naming no program.
    fn check(&self, p: &mut Parser) {
        let progs: Vec<&str> = (self.rows.iter().flat_map(|r| &r.programs))
            .chain(&self.state)
            .map(|p| p.name.as_str())
            .collect();
        for (i, name) in progs.iter().enumerate() {
            if progs[..i].contains(name) {
                p.error(&format!("program {name} is listed twice"));
            }
        }
        for (i, r) in self.rows.iter().enumerate() {
            p.at = format!("the row of {}", r.upper);
            if self.rows[..i].iter().any(|o| o.name == r.name) {
                p.error("a second row of that kind");
            }
            if let Some(a) = r.also.iter().find(|a| !progs.contains(&a.as_str())) {
                p.error(&format!("ALSO({a}) names no program of the table"));
            }
        }
    }

    fn rust(&self) -> String {
        let mut o = String::from(
            "// Generated by crates/abi/build.rs from KESTREL_KINDS and\n\
             // KESTREL_STATE_PROGRAMS in include/kestrel_abi.h: change the table there.\n\n\
             /// A kind of record, as `kestrel_header.kind` carries it: a row of\n\
             /// `KESTREL_KINDS` in `kestrel_abi.h`.\n\
             #[repr(u16)]\n\
             #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\n\
             pub enum Kind {\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                o,
                "    /// `{}`: data_type {}, `struct kestrel_{}`.\n    {} = crate::KESTREL_KIND_{} as u16,",
                r.name,
                r.data_types.join(", "),
                r.name,
                r.camel,
                r.upper
            );
        }
        let n = self.rows.len();
        let _ = writeln!(
            o,
            "}}\n\nimpl Kind {{\n    /// Every kind, in the header's order (`ALL[i]` is `i + 1`).\n    \
             pub const ALL: [Kind; {n}] = [{}];\n}}\n",
            self.rows
                .iter()
                .map(|r| format!("Kind::{}", r.camel))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let _ = writeln!(o, "const TABLE: &[KindSpec; {n}] = &[");
        for r in &self.rows {
            let _ = writeln!(
                o,
                "    KindSpec {{\n        kind: Kind::{},\n        name: {:?},\n        \
                 data_types: &{:?},\n        programs: &[\n{}        ],\n        \
                 also_made_by: &{:?},\n    }},",
                r.camel,
                r.name,
                r.data_types,
                programs(&r.programs, "            "),
                r.also
            );
        }
        let _ = writeln!(
            o,
            "];\n\n/// Programs that make no records of their own: they keep the state other\n\
             /// programs read (the process table, the refused-connection map), and some\n\
             /// notice credential changes (see [`Kind::Cred`]'s `also_made_by`).\n\
             pub const STATE_PROGRAMS: &[Program] = &[\n{}];\n",
            programs(&self.state, "    ")
        );
        // Each record exists and starts with its header.
        o.push_str("const _: () = {\n");
        for r in &self.rows {
            let _ = writeln!(
                o,
                "    assert!(core::mem::offset_of!(crate::kestrel_{}, hdr) == 0);",
                r.name
            );
        }
        o.push_str("};\n\n");
        let _ = writeln!(
            o,
            "/// Calls `$m! {{ Kind name, ... }}` with each kind's [`Kind`] variant and\n\
             /// name, in table order: a crate generates its per-kind modules and matches\n\
             /// from it, so that a kind's `<name>.rs` is required, never registered.\n\
             #[macro_export]\n\
             macro_rules! for_each_kind {{\n    ($m:ident) => {{\n        $m! {{ {} }}\n    }};\n}}",
            self.rows
                .iter()
                .map(|r| format!("{} {}", r.camel, r.name))
                .collect::<Vec<_>>()
                .join(", ")
        );
        o
    }
}

fn programs(progs: &[Prog], indent: &str) -> String {
    let mut o = String::new();
    for p in progs {
        let requires = match &p.needs {
            None => "None".to_string(),
            Some((event, without)) => {
                format!("Some(Requirement {{ tracefs_event: {event:?}, without: {without:?} }})")
            }
        };
        let alternatives = alternatives(p)
            .iter()
            .map(|(backend, name, hook, function)| {
                format!(
                    "Alternative {{ backend: Backend::{backend}, name: {name:?}, hook: {hook:?}, \
                     function: {function:?} }}"
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            o,
            "{indent}Program {{ name: {:?}, hook: {:?}, requires: {requires}, alternatives: &[{alternatives}] }},",
            p.name, p.hook
        );
    }
    o
}

/// Syscalls of the table without arguments (SYSCALL_DEFINE0), whose fexit
/// twin goes on __do_sys_<sys> (KESTREL_SYSCALL0_EXIT).
const NO_ARGUMENTS: &[&str] = &["setsid"];

/// The other ways lib/syscall.h builds a syscall tracepoint's program, as
/// (Backend variant, name, SEC(), kernel function): fentry/fexit and
/// kprobe/kretprobe on the syscall's x86-64 function, named fe_ and kp_
/// where the tracepoint's is handle_. Any other program has none.
fn alternatives(p: &Prog) -> Vec<(&'static str, String, String, String)> {
    let Some(rest) = p.hook.strip_prefix("tracepoint/syscalls/sys_") else {
        return Vec::new();
    };
    let Some((edge, sys)) = rest.split_once('_') else {
        fail(&format!("{}: {} names no syscall", p.name, p.hook));
    };
    if p.name != format!("handle_{sys}_{edge}") {
        fail(&format!(
            "program {} on {}: a syscall tracepoint's program is named handle_{sys}_{edge} \
             (KESTREL_SYSCALL_{}({sys}) in lib/syscall.h makes it and its fentry and kprobe twins)",
            p.name,
            p.hook,
            edge.to_ascii_uppercase()
        ));
    }
    let function = format!("__x64_sys_{sys}");
    // KESTREL_SYSCALL0_EXIT in lib/syscall.h: the BTF of a syscall without
    // arguments names __do_sys_<sys>, of which __x64_sys_<sys> is an alias.
    let fentry_function = if NO_ARGUMENTS.contains(&sys) {
        format!("__do_sys_{sys}")
    } else {
        function.clone()
    };
    let (fentry, kprobe) = match edge {
        "enter" => ("fentry", "kprobe"),
        "exit" => ("fexit", "kretprobe"),
        _ => fail(&format!(
            "{}: {} is neither sys_enter_ nor sys_exit_",
            p.name, p.hook
        )),
    };
    vec![
        (
            "Fentry",
            format!("fe_{sys}_{edge}"),
            format!("{fentry}/{fentry_function}"),
            fentry_function,
        ),
        (
            "Kprobe",
            format!("kp_{sys}_{edge}"),
            format!("{kprobe}/{function}"),
            function,
        ),
    ]
}
