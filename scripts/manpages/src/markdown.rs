//! The README's markdown, as far as the README uses it, turned into man(7) roff: headings,
//! paragraphs, `-` lists with indented continuation lines, fenced and indented code, pipe
//! tables (as tagged paragraphs: no tbl, so nothing overflows 80 columns), `code`, **bold**
//! and [links](...).

/// One heading and the lines under it up to the next heading of any level.
#[derive(Debug)]
pub struct Section {
    pub level: usize,
    pub title: String,
    pub body: Vec<String>,
}

/// A markdown document as a flat list of sections.
pub struct Doc {
    sections: Vec<Section>,
}

impl Doc {
    pub fn parse(text: &str) -> Doc {
        let mut sections = vec![Section { level: 0, title: String::new(), body: Vec::new() }];
        let mut fenced = false;
        for line in text.lines() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
            }
            let hashes = line.bytes().take_while(|&b| b == b'#').count();
            if !fenced && hashes > 0 && line[hashes..].starts_with(' ') {
                sections.push(Section { level: hashes, title: line[hashes..].trim().to_string(), body: Vec::new() });
            } else if let Some(last) = sections.last_mut() {
                last.body.push(line.to_string());
            }
        }
        Doc { sections }
    }

    /// The section of `level` titled `title`.
    pub fn section(&self, level: usize, title: &str) -> Result<&Section, String> {
        self.sections
            .iter()
            .find(|s| s.level == level && s.title == title)
            .ok_or_else(|| format!("README: no {} {title} section", "#".repeat(level)))
    }

    /// The sections below `parent`, up to the next one of its level or higher.
    pub fn subsections<'a>(&'a self, parent: &'a Section) -> impl Iterator<Item = &'a Section> {
        let start = self.sections.iter().position(|s| std::ptr::eq(s, parent)).map_or(self.sections.len(), |i| i + 1);
        self.sections[start..].iter().take_while(move |s| s.level > parent.level)
    }
}

/// `.SH` with the title (sub-subsections get `.SS`), then the body.
pub fn section(s: &Section) -> String {
    let title = escape(&s.title);
    let heading = if s.level <= 3 { format!(".SH {}", title.to_uppercase()) } else { format!(".SS {title}") };
    format!("{heading}\n{}", to_roff(&s.body))
}

#[derive(PartialEq)]
enum Block {
    None,
    Paragraph,
    Item,
}

/// The body lines as roff.
pub fn to_roff(lines: &[String]) -> String {
    let mut out = String::new();
    let mut block = Block::None;
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        let trimmed = line.trim();
        if trimmed.is_empty() {
            block = Block::None;
            i += 1;
        } else if trimmed.starts_with("```") {
            let end =
                lines[i + 1..].iter().position(|l| l.trim().starts_with("```")).map_or(lines.len(), |p| i + 1 + p);
            code(&mut out, &lines[i + 1..end], 0);
            block = Block::None;
            i = end + 1;
        } else if block == Block::None && line.starts_with("    ") {
            let end = lines[i..]
                .iter()
                .position(|l| !l.trim().is_empty() && !l.starts_with("    "))
                .map_or(lines.len(), |p| i + p);
            let mut code_lines = &lines[i..end];
            while code_lines.last().is_some_and(|l| l.trim().is_empty()) {
                code_lines = &code_lines[..code_lines.len() - 1];
            }
            code(&mut out, code_lines, 4);
            i = end;
        } else if trimmed.starts_with('|') {
            let end = lines[i..].iter().position(|l| !l.trim().starts_with('|')).map_or(lines.len(), |p| i + p);
            table(&mut out, &lines[i..end]);
            block = Block::None;
            i = end;
        } else if let Some(item) = trimmed.strip_prefix("- ") {
            out += ".IP \\(bu 2\n";
            emit(&mut out, &inline(item));
            block = Block::Item;
            i += 1;
        } else {
            if block == Block::None {
                out += ".PP\n";
                block = Block::Paragraph;
            }
            emit(&mut out, &inline(trimmed));
            i += 1;
        }
    }
    out
}

/// Columns a code line may have on an 80-column terminal: man indents sections by 7 and the
/// block by 4 more.
const CODE_WIDTH: usize = 80 - 7 - 4;

/// A code block, verbatim and unfilled, with `indent` leading columns removed. A block too wide
/// for 80 columns because of end-of-line `# comments` gets each comment on lines of its own
/// above its code line.
fn code(out: &mut String, lines: &[String], indent: usize) {
    *out += ".PP\n.RS 4\n.nf\n";
    let lines: Vec<&str> = lines.iter().map(|l| l.get(indent..).unwrap_or(l.trim_start())).collect();
    let lines = if lines.iter().any(|l| l.chars().count() > CODE_WIDTH) {
        comments_above(&lines)
    } else {
        lines.iter().map(|l| l.to_string()).collect()
    };
    for l in lines {
        emit(out, &escape(&l).replace('-', "\\-"));
    }
    *out += ".fi\n.RE\n";
}

/// `code   # comment` followed by `          # more comment` lines becomes `# comment`,
/// `# more comment`, `code`.
fn comments_above(lines: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        let Some(at) = line.find("  #").filter(|&at| !line[..at].trim().is_empty()) else {
            out.push(line.to_string());
            continue;
        };
        let code = line[..at].trim_end();
        let lead = &code[..code.len() - code.trim_start().len()];
        out.push(format!("{lead}{}", line[at..].trim_start()));
        while i < lines.len()
            && lines[i].trim_start().starts_with('#')
            && lines[i].len() - lines[i].trim_start().len() > at
        {
            out.push(format!("{lead}{}", lines[i].trim_start()));
            i += 1;
        }
        out.push(code.to_string());
    }
    out
}

/// A pipe table: each row a tagged paragraph, its first cell the tag, the other cells under it
/// as `Header: cell` lines (cells that are `-` left out).
fn table(out: &mut String, rows: &[String]) {
    let cells =
        |row: &str| -> Vec<String> { row.trim().trim_matches('|').split('|').map(|c| c.trim().to_string()).collect() };
    let Some((header, rest)) = rows.split_first() else { return };
    let header = cells(header);
    for row in rest.iter().map(|r| cells(r)) {
        if row.iter().all(|c| c.chars().all(|ch| matches!(ch, '-' | ':'))) {
            continue; // the |---|---| line
        }
        *out += ".TP\n";
        emit(out, &inline(&row[0]));
        let mut first = true;
        for (h, c) in header.iter().zip(&row).skip(1) {
            if c == "-" || c.is_empty() {
                continue;
            }
            if !first {
                *out += ".br\n";
            }
            first = false;
            emit(out, &format!("{}: {}", inline(h), inline(c)));
        }
    }
}

/// Appends one line of roff text.
fn emit(out: &mut String, line: &str) {
    // A line starting with . or ' would be a request.
    if line.starts_with('.') || line.starts_with('\'') {
        *out += "\\&";
    }
    *out += line;
    *out += "\n";
}

/// Roff's escape character, escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\e")
}

/// `code` (any run of backticks) in bold, unhyphenated, with real minus signs; **bold**;
/// [text](link) as text.
pub fn inline(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find('`') {
        out += &prose(&rest[..start]);
        let ticks = rest[start..].bytes().take_while(|&b| b == b'`').count();
        let after = &rest[start + ticks..];
        let fence = "`".repeat(ticks);
        // The span closes at the same run of backticks.
        match after.find(&fence) {
            Some(end) => {
                let code = after[..end].trim();
                // \% keeps the word whole: no hyphen inside a name or a key.
                out += &format!("\\fB\\%{}\\fR", escape(code).replace('-', "\\-"));
                rest = &after[end + ticks..];
            }
            None => {
                out += &prose(&rest[start..]);
                rest = "";
            }
        }
    }
    out + &prose(rest)
}

fn prose(s: &str) -> String {
    let mut s = escape(s);
    while let (Some(a), true) = (s.find("**"), s.matches("**").count() >= 2) {
        let b = a + 2 + s[a + 2..].find("**").expect("counted two");
        s = format!("{}\\fB{}\\fR{}", &s[..a], &s[a + 2..b], &s[b + 2..]);
    }
    // [text](target) -> text
    while let Some(open) = s.find('[') {
        let Some(mid) = s[open..].find("](").map(|m| open + m) else { break };
        let Some(close) = s[mid..].find(')').map(|c| mid + c) else { break };
        s = format!("{}{}{}", &s[..open], &s[open + 1..mid], &s[close + 1..]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_markup() {
        assert_eq!(inline("run `socks4d --check` now"), "run \\fB\\%socks4d \\-\\-check\\fR now");
        assert_eq!(inline("a **b** c"), "a \\fBb\\fR c");
        assert_eq!(inline("``x `y` z``"), "\\fB\\%x `y` z\\fR");
        assert_eq!(inline("see [the spec](https://x/y) and \\n"), "see the spec and \\en");
    }

    #[test]
    fn blocks() {
        let md: Vec<String> = ["Para one", "goes on.", "", "- item", "  more", "- two", "", "    code -x", "", ".dot"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            to_roff(&md),
            ".PP\nPara one\ngoes on.\n.IP \\(bu 2\nitem\nmore\n.IP \\(bu 2\ntwo\n.PP\n.RS 4\n.nf\ncode \\-x\n.fi\n.RE\n.PP\n\\&.dot\n"
        );
    }

    #[test]
    fn wide_code_gets_its_comments_above() {
        let wide = format!("key = 1{}# what it is", " ".repeat(70));
        let more = format!("{}# and more", " ".repeat(77));
        let md: Vec<String> = ["```", &wide, &more, "plain = 2", "```"].iter().map(|s| s.to_string()).collect();
        assert_eq!(to_roff(&md), ".PP\n.RS 4\n.nf\n# what it is\n# and more\nkey = 1\nplain = 2\n.fi\n.RE\n");
    }

    #[test]
    fn tables_become_tagged_paragraphs() {
        let md: Vec<String> =
            ["| A | B | C |", "|---|---|---|", "| `x` | - | yes |"].iter().map(|s| s.to_string()).collect();
        assert_eq!(to_roff(&md), ".TP\n\\fB\\%x\\fR\nC: yes\n");
    }
}
