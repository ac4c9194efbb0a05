//! Everything the CLI writes: stdout lines that survive a closed pipe, stderr lines, pretty
//! JSON for `--json`, aligned tables for people, and text from the node made safe for a
//! terminal.
//!
//! Owns: the closed-pipe policy. Rust's runtime ignores SIGPIPE, so a write into a closed pipe
//! (`picloud apps | head -1`) returns `BrokenPipe`, and `println!` turns that into a panic.
//! Every stdout write of the CLI goes through [`print`], which ends the process quietly with
//! exit 0 on `BrokenPipe`: the reader has all it wanted, and the node's work (if any) is done.
//! Restoring SIGPIPE's default action instead would do the same for stdout, but also kill
//! `picloud serve` whenever a client hangs up on a socket written without `MSG_NOSIGNAL`, and
//! turn a CLI call whose node connection breaks into a silent death instead of exit 3.
//! Does not own: what each command prints (its module), nor clap's own help and errors (clap
//! ignores a closed pipe itself).

use std::io::Write;

use serde_json::Value;

/// Writes `text` to stdout as is. A closed pipe ends the process with exit 0 (see the module
/// doc); any other write error ends it with 1 and a message on stderr.
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprint_line(&format!("picloud: cannot write to stdout: {e}"));
        std::process::exit(1);
    }
}

/// [`print`] with a newline.
pub fn line(text: &str) {
    print(&format!("{text}\n"));
}

/// One line on stderr. A closed stderr is ignored: there is nowhere left to say anything.
pub fn eprint_line(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// `--json`: the node's answer, pretty, as is.
pub fn json(value: &Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    line(&text);
}

/// Rows under headers, columns padded to the widest cell and separated by two spaces; the last
/// column is not padded. Cells are [`clean`]ed: they come from the node, which stores what
/// users sent.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c).replace('\n', " ")).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut push_row = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(cell.chars().count());
            text.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    push_row(&mut headers.iter().copied());
    for row in &rows {
        push_row(&mut row.iter().map(String::as_str));
    }
    out
}

/// Text made safe for a terminal: control characters other than newline and tab are shown
/// escaped, so an escape sequence stored in a script, a log line or a name cannot restyle or
/// rewrite the user's screen.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON field as table text: strings as they are, `null`/absent as `-`, arrays joined with
/// `,` (`-` when empty), anything else as compact JSON.
pub fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) if items.is_empty() => "-".into(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}

/// The array of a list answer (an empty list if the node sent something else).
pub fn items(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_columns_and_trim_the_last() {
        let t = table(
            &["NAME", "KIND", "UPDATED"],
            &[
                vec!["list".into(), "endpoint".into(), "t1".into()],
                vec!["a-much-longer-name".into(), "module".into(), "".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME                KIND      UPDATED\n\
             list                endpoint  t1\n\
             a-much-longer-name  module\n"
        );
    }

    #[test]
    fn cells_are_cleaned_and_joined() {
        assert_eq!(clean("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(cell(Some(&json!(["a", "b"]))), "a,b");
        assert_eq!(cell(Some(&json!([]))), "-");
        assert_eq!(cell(None), "-");
        assert_eq!(cell(Some(&json!(null))), "-");
        assert_eq!(cell(Some(&json!(true))), "true");
        assert_eq!(cell(Some(&json!("x"))), "x");
        let t = table(&["A"], &[vec!["x\u{7}y\nz".into()]]);
        assert_eq!(t, "A\nx\\u{7}y z\n");
    }
}
