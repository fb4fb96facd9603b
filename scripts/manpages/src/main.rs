//! manpages: writes the Debian package's man pages so that none of them can drift from what they
//! describe: socks4d(8) and socks4-run(1) from the clap definitions the binaries parse (plus
//! socks4d's README sections), socks4d.toml(5) and libsocks4(8) from the README sections that
//! document the file and the shim. A README section it needs that is gone is an error.
//!
//! Usage: `manpages OUT_DIR [README.md]` (scripts/package runs it, then gzips the pages).

mod markdown;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use markdown::Doc;

/// The README sections of `## socks4d` that document the configuration file: they make
/// socks4d.toml(5); the other sections of `## socks4d` go to socks4d(8).
const CONFIG_SECTIONS: [&str; 3] = ["Configuration", "Access control", "IDENT (RFC 1413)"];

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let Some(out) = args.next().map(PathBuf::from) else {
        eprintln!("usage: manpages OUT_DIR [README.md]");
        return ExitCode::from(2);
    };
    let readme =
        args.next().map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"), PathBuf::from);
    match write_all(&out, &readme) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("manpages: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_all(out: &Path, readme: &Path) -> Result<Vec<PathBuf>, String> {
    let text = std::fs::read_to_string(readme).map_err(|e| format!("{}: {e}", readme.display()))?;
    let doc = Doc::parse(&text);
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let source = format!("socks4 {}", env!("CARGO_PKG_VERSION"));
    let pages = [
        ("socks4d.8", socks4d_page(&doc, &source)?),
        ("socks4-run.1", socks4_run_page(&source)?),
        ("socks4d.toml.5", config_page(&doc, &source)?),
        ("libsocks4.8", libsocks4_page(&doc, &source)?),
    ];
    let mut written = Vec::new();
    for (name, page) in pages {
        let path = out.join(name);
        std::fs::write(&path, page).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The clap-made parts of a page: title, NAME, SYNOPSIS, DESCRIPTION, OPTIONS.
fn clap_head(man: &clap_mangen::Man) -> Result<Vec<u8>, String> {
    let mut page = Vec::new();
    let io = |e: std::io::Error| e.to_string();
    man.render_title(&mut page).map_err(io)?;
    man.render_name_section(&mut page).map_err(io)?;
    man.render_synopsis_section(&mut page).map_err(io)?;
    man.render_description_section(&mut page).map_err(io)?;
    man.render_options_section(&mut page).map_err(io)?;
    Ok(page)
}

fn socks4d_page(doc: &Doc, source: &str) -> Result<String, String> {
    let man = clap_mangen::Man::new(socks4_server::cli::Args::command())
        .section("8")
        .manual("System Administration")
        .source(source.to_string());
    let mut page = clap_head(&man)?;
    let server = doc.section(2, "socks4d")?;
    writeln!(page, ".SH OPERATION\n{}", markdown::to_roff(&server.body)).map_err(|e| e.to_string())?;
    for sub in doc.subsections(server) {
        if !CONFIG_SECTIONS.contains(&sub.title.as_str()) {
            page.extend(markdown::section(sub).into_bytes());
        }
    }
    page.extend(
        "\
.SH FILES
.TP
.I /etc/socks4d.toml
The configuration the packaged units start socks4d with; see \\fBsocks4d.toml\\fR(5).
.TP
.I /usr/lib/systemd/system/socks4d.service
.TQ
.I /usr/lib/systemd/system/socks4d.socket
The service and the socket activation units.
.SH SEE ALSO
\\fBsocks4d.toml\\fR(5), \\fBsocks4-run\\fR(1), \\fBlibsocks4\\fR(8), \\fBsystemd.socket\\fR(5), \\fBsd_notify\\fR(3)
"
        .bytes(),
    );
    man.render_version_section(&mut page).map_err(|e| e.to_string())?;
    String::from_utf8(page).map_err(|e| e.to_string())
}

fn socks4_run_page(source: &str) -> Result<String, String> {
    let man = clap_mangen::Man::new(socks4_shim::cli::Args::command())
        .section("1")
        .manual("User Commands")
        .source(source.to_string());
    let mut page = clap_head(&man)?;
    page.extend(
        "\
.SH HOW IT WORKS
For a dynamically linked program (or with \\fB\\-\\-preload\\fR), socks4-run looks for
\\fIlibsocks4.so\\fR next to itself, in \\fIdeps/\\fR and \\fI../lib/\\fR beside it,
then in the system's library directory (where the package installs it), puts it first in
\\fBLD_PRELOAD\\fR, sets the variables of its options and executes \\fIPROGRAM\\fR. It warns when
the program (or a script's interpreter) is setuid: the loader ignores \\fBLD_PRELOAD\\fR
there, so such a program would connect directly. A statically linked program (or any, with
\\fB\\-\\-supervise\\fR) runs under the seccomp supervisor instead, which carries out its
socket calls the same way.
.SH ENVIRONMENT
The settings (\\fBSOCKS4_SERVER\\fR, \\fBSOCKS4_DIRECT\\fR, ...) and what the library intercepts are
described in \\fBlibsocks4\\fR(8).
.SH EXIT STATUS
The program's own, or 127 when \\fIlibsocks4.so\\fR or the program is not found, 126 when the
program cannot be executed.
.SH SEE ALSO
\\fBlibsocks4\\fR(8), \\fBsocks4d\\fR(8)
"
        .bytes(),
    );
    man.render_version_section(&mut page).map_err(|e| e.to_string())?;
    String::from_utf8(page).map_err(|e| e.to_string())
}

fn config_page(doc: &Doc, source: &str) -> Result<String, String> {
    let server = doc.section(2, "socks4d")?;
    let mut page = format!(
        "\
.TH SOCKS4D.TOML 5 \"\" \"{source}\" \"File Formats\"
.SH NAME
socks4d.toml \\- socks4d configuration file
.SH SYNOPSIS
.I /etc/socks4d.toml
.SH DESCRIPTION
\\fBsocks4d\\fR(8) reads this TOML file at start (\\fB\\-\\-config\\fR) and again on SIGHUP.
\\fBsocks4d \\-\\-check \\-\\-config\\fR \\fIFILE\\fR validates it and prints the effective settings.
"
    );
    for title in CONFIG_SECTIONS {
        let sub = doc.subsections(server).find(|s| s.title == title).ok_or(format!("README: no section {title:?}"))?;
        page += &markdown::section(sub);
    }
    page += "\
.SH SEE ALSO
\\fBsocks4d\\fR(8)
";
    Ok(page)
}

fn libsocks4_page(doc: &Doc, source: &str) -> Result<String, String> {
    let shim = doc.section(2, "libsocks4.so")?;
    let mut page = format!(
        "\
.TH LIBSOCKS4 8 \"\" \"{source}\" \"System Administration\"
.SH NAME
libsocks4.so \\- make programs connect through SOCKS servers (LD_PRELOAD)
.SH SYNOPSIS
\\fBLD_PRELOAD=libsocks4.so\\fR \\fIPROGRAM\\fR ...
.br
\\fBsocks4-run\\fR [\\fIOPTIONS\\fR] \\fB\\-\\-\\fR \\fIPROGRAM\\fR ...
.SH DESCRIPTION
{}",
        markdown::to_roff(&shim.body)
    );
    for sub in doc.subsections(shim) {
        page += &markdown::section(sub);
    }
    page += "\
.SH FILES
.TP
.I /usr/lib/<multiarch>/libsocks4.so
Where the package installs the library (e.g. \\fI/usr/lib/x86_64\\-linux\\-gnu\\fR): on the
loader's search path, so \\fBLD_PRELOAD=libsocks4.so\\fR finds it without a directory.
.TP
.I /etc/socks4.toml
The settings file read when \\fBSOCKS4_CONF\\fR is not set.
.SH SEE ALSO
\\fBsocks4-run\\fR(1), \\fBsocks4d\\fR(8), \\fBld.so\\fR(8)
";
    Ok(page)
}
