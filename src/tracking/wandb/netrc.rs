//! The netrc file format (as Python's `netrc` module reads it, which is what `wandb login`
//! writes for): whitespace-separated tokens, `machine NAME` / `default` entries with `login`,
//! `account` and `password`, `#` comments, double-quoted tokens, and `macdef` bodies (skipped
//! up to the next blank line).

/// The tokens of `text`, with `macdef` bodies and comments removed.
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let mut chars = line.chars().peekable();
        let mut in_macdef = false;
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let Some(&first) = chars.peek() else { break };
            if first == '#' {
                break;
            }
            let mut token = String::new();
            if first == '"' {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => token.extend(chars.next()),
                        c => token.push(c),
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    token.push(c);
                }
            }
            in_macdef |= token == "macdef";
            out.push(token);
        }
        if in_macdef {
            // The macro body runs to the next empty line.
            for body in lines.by_ref() {
                if body.trim().is_empty() {
                    break;
                }
            }
        }
    }
    out
}

/// The password of the entry for `machine`, else of the `default` entry.
pub(crate) fn password(text: &str, machine: &str) -> Option<String> {
    let tokens = tokens(text);
    let mut found = None;
    let mut default = None;
    let mut current: Option<bool> = None; // Some(true): the wanted machine; Some(false): default.
    let mut i = 0;
    while i < tokens.len() {
        match tokens[i].as_str() {
            "machine" => {
                current = tokens.get(i + 1).map(|m| m == machine).and_then(|hit| hit.then_some(true));
                i += 2;
            }
            "default" => {
                current = Some(false);
                i += 1;
            }
            "macdef" => {
                current = None;
                i += 2;
            }
            "password" => {
                let value = tokens.get(i + 1).cloned();
                match current {
                    Some(true) if found.is_none() => found = value,
                    Some(false) if default.is_none() => default = value,
                    _ => {}
                }
                i += 2;
            }
            "login" | "account" => i += 2,
            _ => i += 1,
        }
    }
    found.or(default).filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_quotes_comments_macdef_and_default() {
        let text = "# comment\nmachine api.wandb.ai\n  login user\n  password abc123\n\
                    macdef init\nmachine api.wandb.ai password fromacro\n\n\
                    machine other login x password \"with space\"\ndefault login d password dflt\n";
        assert_eq!(password(text, "api.wandb.ai").as_deref(), Some("abc123"));
        assert_eq!(password(text, "other").as_deref(), Some("with space"));
        assert_eq!(password(text, "unknown").as_deref(), Some("dflt"));
        assert_eq!(password("machine a login b", "a"), None);
        assert_eq!(password("machine a login b password c machine d password e", "d").as_deref(), Some("e"));
    }
}
