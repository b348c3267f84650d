//! Refuses a config file whose size or nesting no hothot config needs,
//! before the YAML parser sees it: parsing deeply nested YAML takes time
//! quadratic in the depth (a 200 KB file of nested brackets took over 10 s),
//! and `hothot -t` must answer at once.

use super::ConfigError;

/// A config file larger than this is refused (the annotated reference is 6 KB).
pub const MAX_BYTES: usize = 1 << 20;
/// Deepest nesting accepted, counted three ways: flow collections (`[`, `{`),
/// block sequences opened on one line (`- - -`) and indentation (in spaces,
/// divided by two). hothot's own keys nest four levels.
pub const MAX_DEPTH: usize = 64;

/// Checks the file's size and nesting; the error names the line.
pub fn check(text: &str) -> Result<(), ConfigError> {
    if text.len() > MAX_BYTES {
        return Err(ConfigError::Shape(format!(
            "the file is {} bytes; a config file may hold at most {MAX_BYTES}",
            text.len()
        )));
    }
    let mut flow = 0usize;
    for (number, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let mut rest = &line[indent..];
        let mut dashes = 0;
        while let Some(after) = rest
            .strip_prefix("- ")
            .or(rest.strip_prefix('-').filter(|a| a.is_empty()))
        {
            dashes += 1;
            rest = after.trim_start_matches(' ');
        }
        let deepest;
        (flow, deepest) = flow_depth(rest, flow);
        let depth = (indent / 2).max(dashes).max(deepest);
        if depth > MAX_DEPTH {
            return Err(ConfigError::Shape(format!(
                "line {}: nested more than {MAX_DEPTH} levels deep",
                number + 1
            )));
        }
    }
    Ok(())
}

/// The flow-collection depth after `line`, starting from `depth`, and the
/// deepest it reached on the line; quoted text and comments do not count.
fn flow_depth(line: &str, mut depth: usize) -> (usize, usize) {
    let mut deepest = depth;
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') if previous == ' ' => break,
            (None, '[' | '{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (None, ']' | '}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    (depth, deepest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_or_huge_files_are_refused_and_ordinary_ones_pass() {
        let reference = include_str!("../../conf/hothot.yaml");
        assert!(check(reference).is_ok());
        let brackets = format!("listen: {}{}", "[".repeat(65), "]".repeat(65));
        assert!(check(&brackets).unwrap_err().to_string().contains("line 1"));
        let dashes = format!("listen:\n  {}x", "- ".repeat(65));
        assert!(check(&dashes).is_err());
        let indented: String = (0..70).map(|i| format!("{}a:\n", "  ".repeat(i))).collect();
        assert!(check(&indented)
            .unwrap_err()
            .to_string()
            .contains("line 66"));
        assert!(check(&"#".repeat(MAX_BYTES + 1)).is_err());
        assert!(check("a: \"[[[[\" # {{{{\n").is_ok());
    }
}
