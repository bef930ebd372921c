//! plumb: send a message to the plumber. See docs/plumb.md.

use clap::Parser;
use plumber::client::Plumb;
use plumber::msg::{Message, unpack_attr};
use std::io::Read;

/// Send each data argument, or with -i standard input, as a plumb message
/// (docs/plumb.md).
#[derive(Parser)]
#[command(name = "plumb", version)]
struct Args {
    /// Write to this plumber file instead of send (a path with / is a host file)
    #[arg(short = 'p', value_name = "plumbfile")]
    plumbfile: Option<String>,
    /// Attributes, 'name=value ...' (may be given more than once)
    #[arg(short = 'a', value_name = "attrs")]
    attrs: Vec<String>,
    /// The source (default plumb)
    #[arg(short = 's', value_name = "src", default_value = "plumb")]
    src: String,
    /// The destination port
    #[arg(short = 'd', value_name = "dst", default_value = "")]
    dst: String,
    /// The type (default text)
    #[arg(
        short = 't',
        visible_short_alias = 'k',
        value_name = "type",
        default_value = "text"
    )]
    kind: String,
    /// The working directory (default the current one)
    #[arg(short = 'w', value_name = "wdir")]
    wdir: Option<String>,
    /// Send standard input as one message, with action=showdata unless -a names an action
    #[arg(short = 'i')]
    input: bool,
    /// The data, one message each
    data: Vec<String>,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("plumb: {msg}");
    std::process::exit(1);
}

fn main() {
    let a = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) {
                e.exit();
            }
            let _ = e.print();
            std::process::exit(1);
        }
    };
    if a.input != a.data.is_empty() {
        eprintln!(
            "usage: plumb [-p plumbfile] [-a 'attr=value ...'] [-s src] [-d dst] [-t type] [-w wdir] -i | data..."
        );
        std::process::exit(1);
    }
    let wdir = a.wdir.clone().unwrap_or_else(|| {
        std::env::current_dir()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    let mut m = Message {
        src: a.src.clone(),
        dst: a.dst.clone(),
        wdir,
        kind: a.kind.clone(),
        attr: Vec::new(),
        data: Vec::new(),
    };
    for s in &a.attrs {
        m.attr.extend(unpack_attr(s));
    }
    let mut msgs = Vec::new();
    if a.input {
        let mut d = Vec::new();
        if let Err(e) = std::io::stdin().read_to_end(&mut d) {
            fail(format!("i/o error on input: {e}"));
        }
        if m.lookup("action").is_none() {
            m.attr.extend(unpack_attr("action=showdata"));
        }
        m.data = d;
        msgs.push(m);
    } else {
        for d in &a.data {
            let mut x = m.clone();
            x.data = d.as_bytes().to_vec();
            msgs.push(x);
        }
    }
    let file = a.plumbfile.as_deref().unwrap_or("send");
    if file.contains('/') {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .unwrap_or_else(|e| fail(format!("can't open plumb file: {e}")));
        for x in &msgs {
            if let Err(e) = f.write_all(&x.pack()) {
                fail(format!("can't send message: {e}"));
            }
        }
        return;
    }
    let p = Plumb::connect().unwrap_or_else(|e| fail(format!("can't open plumb file: {e}")));
    let s = p
        .sender(file)
        .unwrap_or_else(|e| fail(format!("can't open plumb file: {e}")));
    for x in &msgs {
        if let Err(e) = s.send(x) {
            fail(format!("can't send message: {e}"));
        }
    }
}
