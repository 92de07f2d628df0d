//! docs/events.md shows the table of kinds as it is: the part between its
//! `kinds` markers is rendered from `kestrel_abi::kinds`. After a change to
//! the table, `KESTREL_BLESS=1 cargo test -p kestrel-abi --test kinds_doc`
//! rewrites it.

use std::fmt::Write as _;
use std::path::Path;

use kestrel_abi::kinds::{Kind, Program, STATE_PROGRAMS};

const BEGIN: &str = "<!-- kinds:begin -->\n";
const END: &str = "<!-- kinds:end -->";

fn program(p: &Program) -> String {
    format!("`{}` (`{}`)", p.name, p.hook)
}

fn render() -> String {
    let mut md = String::from(
        "| kind | data_type | counters | programs and hooks | requires |\n\
         |---|---|---|---|---|\n",
    );
    for kind in Kind::ALL {
        let s = kind.spec();
        let mut programs: Vec<String> = s.programs.iter().map(program).collect();
        if !s.also_made_by.is_empty() {
            let by: Vec<String> = s.also_made_by.iter().map(|p| format!("`{p}`")).collect();
            let also = if programs.is_empty() { "" } else { "also " };
            programs.push(format!("{also}made by {}", by.join(", ")));
        }
        let requires: Vec<String> = s
            .programs
            .iter()
            .filter_map(|p| {
                let r = p.requires.as_ref()?;
                Some(format!(
                    "`{}`: tracefs event `{}`; without it: {}",
                    p.name, r.tracefs_event, r.without
                ))
            })
            .collect();
        writeln!(
            md,
            "| `{}` | {} | `{n}_submitted`, `{n}_lost` | {} | {} |",
            s.name,
            s.data_types.join(", "),
            programs.join("<br>"),
            requires.join("<br>"),
            n = s.name,
        )
        .unwrap();
    }
    let state: Vec<String> = STATE_PROGRAMS.iter().map(program).collect();
    write!(
        md,
        "\nPrograms that make no records of their own and keep the state the \
         others read: {}.\n",
        state.join(", ")
    )
    .unwrap();
    md
}

#[test]
fn events_md_shows_the_table_of_kinds() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/events.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc
        .find(BEGIN)
        .unwrap_or_else(|| panic!("{} has no {BEGIN:?} marker", path.display()))
        + BEGIN.len();
    let end = start
        + doc[start..]
            .find(END)
            .unwrap_or_else(|| panic!("{} has no {END:?} marker", path.display()));
    let want = render();
    if doc[start..end] == want {
        return;
    }
    if std::env::var_os("KESTREL_BLESS").is_some() {
        std::fs::write(&path, format!("{}{want}{}", &doc[..start], &doc[end..])).unwrap();
        return;
    }
    panic!(
        "docs/events.md's table of kinds is stale; rewrite it with \
         `KESTREL_BLESS=1 cargo test -p kestrel-abi --test kinds_doc`.\n\
         It should read:\n{want}"
    );
}
