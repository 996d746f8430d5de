//! `toolbox`: the node's tools for `kubectl exec`, `kubectl cp` and `kubectl debug` into Wasm
//! pods, one WASI command dispatching on its `argv[0]` (or `toolbox TOOL ARGS...`). It runs in the
//! pod's sandbox, so it sees exactly the pod's mounted volumes, environment and network.
//!
//! Tools: `ls [-l] [-a] [PATH...]`, `cat [FILE...]` (stdin without files or with `-`), `echo
//! [-n] WORDS`, `env`, `tar` (`c`, `x`, `t` with `f -|FILE`, `-C DIR`, `-v`; `-m`,
//! `--no-same-owner` and `--no-same-permissions` are accepted, as WASI has neither owners nor
//! modes), `sleep SECONDS`, `test`/`[` (`-d -f -e -s -n -z`, `=`, `!=`), `mkdir [-p]`, `rm [-r]
//! [-f]`, `touch`, `pwd`, `true`, `false`, `head [-n N]`, `wc [-l]`. Errors go to stderr in the
//! usual `tool: what: why` form with exit code 1 (2 for usage). Run as `toolbox` with no tool,
//! it reads one command per line from stdin (what `kubectl debug -it` talks to).

use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// A tool's failure: (exit code, message for stderr).
type Failure = (u8, String);

fn usage(tool: &str, what: &str) -> Failure {
    (2, format!("{tool}: {what}"))
}

fn io_err(tool: &str, what: &dyn std::fmt::Display, e: io::Error) -> Failure {
    (1, format!("{tool}: {what}: {}", describe(&e)))
}

fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "No such file or directory".into(),
        io::ErrorKind::PermissionDenied => "Permission denied".into(),
        io::ErrorKind::AlreadyExists => "File exists".into(),
        _ => e.to_string(),
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().collect();
    let mut tool = args
        .first()
        .map(|a| a.rsplit('/').next().unwrap_or(a).to_owned())
        .unwrap_or_default();
    args.remove(0);
    if tool == "toolbox" {
        if args.is_empty() {
            return interactive();
        }
        tool = args.remove(0);
    }
    let result = run(&tool, &args);
    let _ = io::stdout().flush();
    match result {
        Ok(code) => ExitCode::from(code),
        Err((code, msg)) => {
            eprintln!("{msg}");
            ExitCode::from(code)
        }
    }
}

/// With no tool named (`kubectl debug -it POD --image=shoal.local/toolbox:latest`): reads one
/// command per line (words split on spaces, no quoting) until `exit` or the end of input.
fn interactive() -> ExitCode {
    eprintln!(
        "toolbox: one command per line (ls cat echo env tar sleep test mkdir rm touch pwd head wc); `exit` ends"
    );
    let mut last = 0;
    let stdin = io::stdin();
    loop {
        eprint!("$ ");
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => return ExitCode::from(last),
            Ok(_) => {}
        }
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let Some((tool, args)) = words.split_first() else {
            continue;
        };
        if tool == "exit" {
            return ExitCode::from(args.first().and_then(|c| c.parse().ok()).unwrap_or(last));
        }
        last = match run(tool, args) {
            Ok(code) => code,
            Err((code, msg)) => {
                eprintln!("{msg}");
                code
            }
        };
        let _ = io::stdout().flush();
    }
}

fn run(tool: &str, args: &[String]) -> Result<u8, Failure> {
    match tool {
        "ls" => ls(args),
        "cat" => cat(args),
        "echo" => echo(args),
        "env" => {
            let mut out = io::stdout().lock();
            for (k, v) in std::env::vars() {
                let _ = writeln!(out, "{k}={v}");
            }
            Ok(0)
        }
        "tar" => tar(args),
        "sleep" => {
            let secs: f64 = args
                .first()
                .and_then(|a| a.trim_end_matches('s').parse().ok())
                .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                .ok_or_else(|| usage("sleep", "missing or invalid operand"))?;
            std::thread::sleep(Duration::from_secs_f64(secs));
            Ok(0)
        }
        "test" => Ok(if test(args)? { 0 } else { 1 }),
        "[" => match args.split_last() {
            Some((last, rest)) if last == "]" => Ok(if test(rest)? { 0 } else { 1 }),
            _ => Err(usage("[", "missing ']'")),
        },
        "mkdir" => mkdir(args),
        "rm" => rm(args),
        "touch" => {
            for p in args.iter().filter(|a| !a.starts_with('-')) {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| io_err("touch", &format!("cannot touch '{p}'"), e))?;
            }
            Ok(0)
        }
        "pwd" => {
            let dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
            println!("{}", dir.display());
            Ok(0)
        }
        "true" => Ok(0),
        "false" => Ok(1),
        "head" => head(args),
        "wc" => wc(args),
        other => Err((
            127,
            format!(
                "toolbox: {other}: command not found (tools: ls cat echo env tar sleep test [ mkdir rm touch pwd true false head wc)"
            ),
        )),
    }
}

/// Splits `-abc` style flags from operands; `--` ends flags.
fn flags<'a>(
    args: &'a [String],
    known: &str,
    tool: &str,
) -> Result<(String, Vec<&'a str>), Failure> {
    let mut set = String::new();
    let mut rest = Vec::new();
    let mut operands_only = false;
    for a in args {
        if !operands_only && a == "--" {
            operands_only = true;
        } else if !operands_only && a.len() > 1 && a.starts_with('-') {
            for c in a[1..].chars() {
                if !known.contains(c) {
                    return Err(usage(tool, &format!("invalid option -- '{c}'")));
                }
                set.push(c);
            }
        } else {
            rest.push(a.as_str());
        }
    }
    Ok((set, rest))
}

fn ls(args: &[String]) -> Result<u8, Failure> {
    let (f, mut paths) = flags(args, "la1", "ls")?;
    let long = f.contains('l');
    let all = f.contains('a');
    if paths.is_empty() {
        paths.push(".");
    }
    let mut out = io::stdout().lock();
    let mut code = 0;
    let many = paths.len() > 1;
    for (i, p) in paths.iter().enumerate() {
        if *p == "/" && std::fs::read_dir("/").is_err() {
            // WASI has no root directory: `/` shows the top of each mounted volume.
            let mut tops: Vec<String> = wasip2::filesystem::preopens::get_directories()
                .into_iter()
                .filter_map(|(_, path)| {
                    let top = path.trim_start_matches('/').split('/').next()?.to_owned();
                    (!top.is_empty()).then_some(top)
                })
                .collect();
            tops.sort();
            tops.dedup();
            for t in tops {
                let _ = writeln!(out, "{t}");
            }
            continue;
        }
        let meta = match std::fs::metadata(p) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("ls: cannot access '{p}': {}", describe(&e));
                code = 2;
                continue;
            }
        };
        if !meta.is_dir() {
            line(&mut out, long, p, &meta);
            continue;
        }
        if many {
            let _ = writeln!(out, "{}{p}:", if i > 0 { "\n" } else { "" });
        }
        let mut entries: Vec<(String, std::fs::Metadata)> = match std::fs::read_dir(p) {
            Ok(rd) => rd
                .flatten()
                .filter_map(|e| {
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        e.metadata().ok()?,
                    ))
                })
                .filter(|(n, _)| all || !n.starts_with('.'))
                .collect(),
            Err(e) => {
                eprintln!("ls: cannot open directory '{p}': {}", describe(&e));
                code = 2;
                continue;
            }
        };
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, meta) in &entries {
            line(&mut out, long, name, meta);
        }
    }
    Ok(code)
}

fn line(out: &mut impl Write, long: bool, name: &str, meta: &std::fs::Metadata) {
    if long {
        let kind = if meta.is_dir() { 'd' } else { '-' };
        let _ = writeln!(out, "{kind} {:>10} {name}", meta.len());
    } else {
        let _ = writeln!(out, "{name}");
    }
}

fn cat(args: &[String]) -> Result<u8, Failure> {
    let mut out = io::stdout().lock();
    let files: Vec<&str> = if args.is_empty() {
        vec!["-"]
    } else {
        args.iter().map(String::as_str).collect()
    };
    let mut code = 0;
    for f in files {
        let copied = if f == "-" {
            io::copy(&mut io::stdin().lock(), &mut out)
        } else {
            std::fs::File::open(f).and_then(|mut file| io::copy(&mut file, &mut out))
        };
        if let Err(e) = copied {
            let _ = out.flush();
            eprintln!("cat: {f}: {}", describe(&e));
            code = 1;
        }
    }
    Ok(code)
}

fn echo(args: &[String]) -> Result<u8, Failure> {
    let (newline, words) = match args.first() {
        Some(f) if f == "-n" => (false, &args[1..]),
        _ => (true, args),
    };
    let mut out = io::stdout().lock();
    let _ = write!(out, "{}", words.join(" "));
    if newline {
        let _ = writeln!(out);
    }
    Ok(0)
}

fn test(args: &[String]) -> Result<bool, Failure> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok(match a.as_slice() {
        [] => false,
        ["!", rest @ ..] => {
            let rest: Vec<String> = rest.iter().map(|s| s.to_string()).collect();
            !test(&rest)?
        }
        [s] => !s.is_empty(),
        ["-d", p] => Path::new(p).is_dir(),
        ["-f", p] => Path::new(p).is_file(),
        ["-e", p] => Path::new(p).exists(),
        ["-s", p] => std::fs::metadata(p).is_ok_and(|m| m.len() > 0),
        ["-n", s] => !s.is_empty(),
        ["-z", s] => s.is_empty(),
        [x, "=", y] | [x, "==", y] => x == y,
        [x, "!=", y] => x != y,
        _ => {
            return Err(usage(
                "test",
                &format!("unsupported expression: {}", a.join(" ")),
            ));
        }
    })
}

fn mkdir(args: &[String]) -> Result<u8, Failure> {
    let (f, dirs) = flags(args, "p", "mkdir")?;
    if dirs.is_empty() {
        return Err(usage("mkdir", "missing operand"));
    }
    for d in dirs {
        let made = if f.contains('p') {
            std::fs::create_dir_all(d)
        } else {
            std::fs::create_dir(d)
        };
        made.map_err(|e| io_err("mkdir", &format!("cannot create directory '{d}'"), e))?;
    }
    Ok(0)
}

fn rm(args: &[String]) -> Result<u8, Failure> {
    let (f, paths) = flags(args, "rfR", "rm")?;
    let recursive = f.contains('r') || f.contains('R');
    let force = f.contains('f');
    let mut code = 0;
    for p in paths {
        let removed = match std::fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() && recursive => std::fs::remove_dir_all(p),
            Ok(m) if m.is_dir() => {
                eprintln!("rm: cannot remove '{p}': Is a directory");
                code = 1;
                continue;
            }
            Ok(_) => std::fs::remove_file(p),
            Err(e) => Err(e),
        };
        if let Err(e) = removed
            && !(force && e.kind() == io::ErrorKind::NotFound)
        {
            eprintln!("rm: cannot remove '{p}': {}", describe(&e));
            code = 1;
        }
    }
    Ok(code)
}

fn lines_arg(args: &[String], tool: &str) -> Result<(usize, Vec<String>), Failure> {
    let mut n = 10;
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-n" {
            n = it
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| usage(tool, "invalid number of lines"))?;
        } else if let Some(v) = a.strip_prefix("-n") {
            n = v
                .parse()
                .map_err(|_| usage(tool, "invalid number of lines"))?;
        } else {
            files.push(a.clone());
        }
    }
    Ok((n, files))
}

fn open_input(f: &str) -> io::Result<Box<dyn BufRead>> {
    if f == "-" {
        Ok(Box::new(io::BufReader::new(io::stdin())))
    } else {
        Ok(Box::new(io::BufReader::new(std::fs::File::open(f)?)))
    }
}

fn head(args: &[String]) -> Result<u8, Failure> {
    let (n, mut files) = lines_arg(args, "head")?;
    if files.is_empty() {
        files.push("-".into());
    }
    let mut out = io::stdout().lock();
    for f in &files {
        let input = open_input(f)
            .map_err(|e| io_err("head", &format!("cannot open '{f}' for reading"), e))?;
        for l in input.split(b'\n').take(n) {
            let l = l.map_err(|e| io_err("head", f, e))?;
            let _ = out.write_all(&l);
            let _ = out.write_all(b"\n");
        }
    }
    Ok(0)
}

fn wc(args: &[String]) -> Result<u8, Failure> {
    let (f, files) = flags(args, "l", "wc")?;
    let files: Vec<&str> = if files.is_empty() { vec!["-"] } else { files };
    for name in files {
        let mut input = open_input(name).map_err(|e| io_err("wc", &name, e))?;
        let mut buf = Vec::new();
        input
            .read_to_end(&mut buf)
            .map_err(|e| io_err("wc", &name, e))?;
        let lines = buf.iter().filter(|b| **b == b'\n').count();
        let shown = if name == "-" { "" } else { name };
        if f.contains('l') {
            println!("{lines} {shown}");
        } else {
            let words = String::from_utf8_lossy(&buf).split_whitespace().count();
            println!("{lines} {words} {} {shown}", buf.len());
        }
    }
    Ok(0)
}

/// What a `tar` invocation asks for.
#[derive(Default)]
struct TarArgs {
    mode: Option<char>,
    file: Option<String>,
    dir: Option<String>,
    verbose: bool,
    paths: Vec<String>,
}

fn tar_args(args: &[String]) -> Result<TarArgs, Failure> {
    let mut t = TarArgs::default();
    let mut it = args.iter().peekable();
    let mut first = true;
    while let Some(a) = it.next() {
        if let Some(long) = a.strip_prefix("--") {
            match long {
                "no-same-permissions" | "no-same-owner" | "touch" => {}
                "extract" | "get" => t.mode = Some('x'),
                "create" => t.mode = Some('c'),
                "list" => t.mode = Some('t'),
                "verbose" => t.verbose = true,
                _ if long.starts_with("file=") => t.file = Some(long[5..].to_owned()),
                _ if long.starts_with("directory=") => t.dir = Some(long[10..].to_owned()),
                _ => return Err(usage("tar", &format!("unrecognized option '--{long}'"))),
            }
        } else if a.starts_with('-') && a.len() > 1 || first && !a.starts_with('-') {
            // `-xmf -` or the old style `cf -`: letters, those taking a value consume the next
            // word in order.
            for c in a.trim_start_matches('-').chars() {
                match c {
                    'x' | 'c' | 't' => t.mode = Some(c),
                    'v' => t.verbose = true,
                    'm' | 'p' | 'o' => {}
                    'f' => {
                        t.file =
                            Some(it.next().cloned().ok_or_else(|| {
                                usage("tar", "option requires an argument -- 'f'")
                            })?)
                    }
                    'C' => {
                        t.dir =
                            Some(it.next().cloned().ok_or_else(|| {
                                usage("tar", "option requires an argument -- 'C'")
                            })?)
                    }
                    _ => return Err(usage("tar", &format!("invalid option -- '{c}'"))),
                }
            }
        } else {
            t.paths.push(a.clone());
        }
        first = false;
    }
    Ok(t)
}

/// Seconds since the epoch a file was last modified (0 if unknown).
fn mtime(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// Appends `src` as `name`, directories recursively (tar's own metadata filling is not
/// implemented for wasm32, so headers are written here).
fn append(
    b: &mut tar::Builder<Box<dyn Write>>,
    src: &Path,
    name: &str,
    verbose: bool,
) -> io::Result<()> {
    let meta = std::fs::metadata(src)?;
    let mut h = tar::Header::new_gnu();
    h.set_mtime(mtime(&meta));
    if verbose {
        eprintln!("{name}");
    }
    if meta.is_dir() {
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        let dir_name = if name.ends_with('/') {
            name.to_owned()
        } else {
            format!("{name}/")
        };
        if name != "." {
            b.append_data(&mut h, &dir_name, io::empty())?;
        }
        let mut children: Vec<_> = std::fs::read_dir(src)?.flatten().collect();
        children.sort_by_key(|e| e.file_name());
        for child in children {
            let child_name = child.file_name().to_string_lossy().into_owned();
            let full = if name == "." {
                child_name
            } else {
                format!("{dir_name}{child_name}")
            };
            append(b, &child.path(), &full, verbose)?;
        }
        Ok(())
    } else {
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(meta.len());
        b.append_data(&mut h, name, std::fs::File::open(src)?)
    }
}

/// Where an archive member goes under `base`, or `None` if its name climbs out.
fn member_path(base: &Path, name: &Path) -> Option<PathBuf> {
    let mut out = base.to_path_buf();
    for c in name.components() {
        match c {
            std::path::Component::Normal(p) => out.push(p),
            std::path::Component::CurDir | std::path::Component::RootDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn tar(args: &[String]) -> Result<u8, Failure> {
    let t = tar_args(args)?;
    let file = t.file.clone().unwrap_or_else(|| "-".into());
    let base = PathBuf::from(t.dir.clone().unwrap_or_else(|| ".".into()));
    match t.mode {
        Some('c') => {
            if t.paths.is_empty() {
                return Err(usage("tar", "Cowardly refusing to create an empty archive"));
            }
            let out: Box<dyn Write> = if file == "-" {
                Box::new(io::stdout().lock())
            } else {
                Box::new(std::fs::File::create(&file).map_err(|e| io_err("tar", &file, e))?)
            };
            let mut b = tar::Builder::new(out);
            let mut warned = false;
            for p in &t.paths {
                let name = p.trim_start_matches('/');
                if name.len() != p.len() && !warned {
                    eprintln!("tar: Removing leading `/' from member names");
                    warned = true;
                }
                let name = if name.is_empty() { "." } else { name };
                append(&mut b, &base.join(p), name, t.verbose).map_err(|e| io_err("tar", p, e))?;
            }
            b.into_inner()
                .and_then(|mut w| w.flush())
                .map_err(|e| io_err("tar", &file, e))?;
            Ok(0)
        }
        Some(mode @ ('x' | 't')) => {
            let input: Box<dyn Read> = if file == "-" {
                Box::new(io::stdin().lock())
            } else {
                Box::new(std::fs::File::open(&file).map_err(|e| io_err("tar", &file, e))?)
            };
            let mut archive = tar::Archive::new(input);
            let entries = archive.entries().map_err(|e| io_err("tar", &file, e))?;
            let mut code = 0;
            for entry in entries {
                let mut entry = entry.map_err(|e| io_err("tar", &file, e))?;
                let name = entry.path().map(|p| p.into_owned()).unwrap_or_default();
                let shown = name.display().to_string();
                if mode == 't' || t.verbose {
                    println!("{shown}");
                }
                if mode == 't' {
                    continue;
                }
                let Some(dst) = member_path(&base, &name) else {
                    eprintln!("tar: {shown}: Member name contains '..'; skipped");
                    code = 2;
                    continue;
                };
                let written = match entry.header().entry_type() {
                    tar::EntryType::Directory => std::fs::create_dir_all(&dst),
                    tar::EntryType::Regular | tar::EntryType::Continuous => {
                        if let Some(parent) = dst.parent() {
                            let _ = std::fs::create_dir_all(parent);
                        }
                        std::fs::File::create(&dst)
                            .and_then(|mut f| io::copy(&mut entry, &mut f).map(|_| ()))
                    }
                    // Pax and GNU long-name records are read by `entries` itself.
                    tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => Ok(()),
                    other => {
                        eprintln!("tar: {shown}: {other:?} members are not supported; skipped");
                        Ok(())
                    }
                };
                if let Err(e) = written {
                    eprintln!("tar: {shown}: Cannot open: {}", describe(&e));
                    code = 2;
                }
            }
            Ok(code)
        }
        _ => Err(usage("tar", "You must specify one of the '-ctx' options")),
    }
}
