//! The dependency graph: nodes for files (and virtual targets), arcs for the rules
//! that make them, built from the rules as plan9port's mk builds it.

use crate::{Failed, Mk, NodeId, R, RuleId};

pub const VIRTUAL: u32 = 1 << 0;
pub const CYCLE: u32 = 1 << 1;
pub const READY: u32 = 1 << 2;
pub const CANPRETEND: u32 = 1 << 3;
pub const PRETENDING: u32 = 1 << 4;
pub const NOTMADE: u32 = 1 << 5;
pub const BEINGMADE: u32 = 1 << 6;
pub const MADE: u32 = 1 << 7;
pub const PROBABLE: u32 = 1 << 8;
pub const VACUOUS: u32 = 1 << 9;
pub const NORECIPE: u32 = 1 << 10;
pub const DELETE: u32 = 1 << 11;
/// Visited by a traversal that needs to see each node once.
pub const SEEN: u32 = 1 << 12;
pub const CYCLEDONE: u32 = 1 << 13;

pub struct Node {
    pub name: String,
    /// Modification time in nanoseconds; 0: no such file.
    pub time: i128,
    pub flags: u32,
    pub prereqs: Vec<Arc>,
    /// The other targets made by the same recipe run.
    pub next: Option<NodeId>,
}

pub struct Arc {
    pub n: Option<NodeId>,
    pub r: RuleId,
    pub stem: String,
    /// `R` rules: the whole match and the groups (`stem0` ... `stem9`).
    pub matches: Vec<Option<String>>,
    pub togo: bool,
    pub prog: Option<String>,
}

/// Compile an `R` rule's pattern. Plan 9 regular expressions are read by the regex
/// crate, whose syntax is a superset for the constructs mkfiles use.
pub fn compile_regexp(p: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(p).map_err(|e| {
        let s = match e {
            regex::Error::Syntax(s) => s
                .lines()
                .last()
                .unwrap_or("syntax error")
                .trim_start_matches("error: ")
                .to_string(),
            other => other.to_string(),
        };
        // Plan 9's words for the common mistakes.
        if s.contains("character class") {
            "malformed '[]'".to_string()
        } else if s.contains("unclosed group") {
            "unmatched left paren".to_string()
        } else if s.contains("unopened group") {
            "unmatched right paren".to_string()
        } else if s.contains("repetition operator missing expression") {
            "missing operand".to_string()
        } else {
            s
        }
    })
}

/// `%` or `&` in a pattern, with the stem: `%` matches anything, `&` anything
/// without `.` or `/`.
pub fn pmatch(name: &str, template: &str) -> Option<String> {
    let at = template.find(['%', '&'])?;
    let (pre, suf) = (&template[..at], &template[at + 1..]);
    if !name.starts_with(pre) || name.len() < pre.len() + suf.len() || !name.ends_with(suf) {
        return None;
    }
    let stem = &name[pre.len()..name.len() - suf.len()];
    if template.as_bytes()[at] == b'&' && stem.contains(['.', '/']) {
        return None;
    }
    Some(stem.to_string())
}

/// A template with its `%` (or `&`) replaced by the stem.
pub fn subst(stem: &str, template: &str) -> String {
    let mut out = String::with_capacity(template.len() + stem.len());
    for c in template.chars() {
        if c == '%' || c == '&' {
            out.push_str(stem);
        } else {
            out.push(c);
        }
    }
    out
}

/// Plan 9's regsub: `\0`...`\9` become the groups.
fn regsub(template: &str, m: &[Option<String>]) -> String {
    let mut out = String::new();
    let mut it = template.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some(d @ '0'..='9') => {
                    let i = d as usize - '0' as usize;
                    if let Some(Some(s)) = m.get(i) {
                        out.push_str(s);
                    }
                }
                Some('\\') => out.push('\\'),
                Some(d) => {
                    out.push('\\');
                    out.push(d);
                }
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Mk {
    /// The node of a name, made if new.
    fn newnode(&mut self, name: &str) -> NodeId {
        let time = self.timeof(name, false);
        let id = self.nodes.len();
        self.nodes.push(Node {
            name: name.to_string(),
            time,
            flags: if time != 0 { PROBABLE } else { 0 },
            prereqs: Vec::new(),
            next: None,
        });
        self.node_of.insert(name.to_string(), id);
        id
    }

    /// Build the graph below a target.
    pub fn graph(&mut self, target: &str) -> R<NodeId> {
        let mut cnt = vec![0u32; self.nrules];
        let n = self.applyrules(target, &mut cnt);
        if self.fatal {
            return Err(Failed);
        }
        self.cyclechk(n)?;
        self.nodes[n].flags |= PROBABLE;
        self.vacuous(n);
        self.ambiguous(n)?;
        let mut seen = vec![false; self.nodes.len()];
        self.attribute(n, &mut seen);
        Ok(n)
    }

    fn applyrules(&mut self, target: &str, cnt: &mut Vec<u32>) -> NodeId {
        stacker::maybe_grow(64 * 1024, 1024 * 1024, || {
            self.applyrules_inner(target, cnt)
        })
    }

    fn applyrules_inner(&mut self, target: &str, cnt: &mut Vec<u32>) -> NodeId {
        if let Some(&n) = self.node_of.get(target) {
            return n;
        }
        let node = self.newnode(target);
        let mut arcs: Vec<Arc> = Vec::new();
        let nomatch: Vec<Option<String>> = Vec::new();
        let chain = self.by_target.get(target).cloned().unwrap_or_default();
        for r in chain {
            let rule = &self.rules[r];
            if rule.attr.meta || rule.target != target {
                continue;
            }
            let no_tail = rule.tail.first().is_none_or(|s| s.is_empty());
            if rule.recipe.is_empty() && no_tail {
                continue;
            }
            let id = rule.id;
            if cnt[id] >= self.nreps {
                continue;
            }
            cnt[id] += 1;
            self.nodes[node].flags |= PROBABLE;
            let prog = self.rules[r].prog.clone();
            if no_tail {
                arcs.push(Arc {
                    n: None,
                    r,
                    stem: String::new(),
                    matches: nomatch.clone(),
                    togo: false,
                    prog,
                });
            } else {
                let tail = self.rules[r].tail.clone();
                for w in tail {
                    let n = self.applyrules(&w, cnt);
                    arcs.push(Arc {
                        n: Some(n),
                        r,
                        stem: String::new(),
                        matches: nomatch.clone(),
                        togo: false,
                        prog: prog.clone(),
                    });
                }
            }
            cnt[id] -= 1;
        }
        let metas = self.metarules.clone();
        for r in metas {
            let rule = &self.rules[r];
            let no_tail = rule.tail.first().is_none_or(|s| s.is_empty());
            if rule.recipe.is_empty() && no_tail {
                continue;
            }
            if rule.attr.n {
                if let Some(last) = arcs.last() {
                    if self.rules[last.r].attr.v {
                        continue;
                    }
                }
            }
            let mut stem = String::new();
            let mut matches: Vec<Option<String>> = Vec::new();
            if rule.attr.r {
                let Some(re) = &rule.regex else { continue };
                let Some(caps) = re.captures(target) else {
                    continue;
                };
                // As plan9port: stem0 runs from the start of the match to the end of
                // the name; stem1...stem9 are the groups.
                matches = (0..10)
                    .map(|i| {
                        caps.get(i).map(|m| {
                            if i == 0 {
                                target[m.start()..].to_string()
                            } else {
                                m.as_str().to_string()
                            }
                        })
                    })
                    .collect();
            } else {
                match pmatch(target, &rule.target) {
                    Some(s) => stem = s,
                    None => continue,
                }
            }
            let id = rule.id;
            if cnt[id] >= self.nreps {
                continue;
            }
            cnt[id] += 1;
            let prog = rule.prog.clone();
            let is_re = rule.attr.r;
            if no_tail {
                arcs.push(Arc {
                    n: None,
                    r,
                    stem,
                    matches,
                    togo: false,
                    prog,
                });
            } else {
                let tail = self.rules[r].tail.clone();
                for w in tail {
                    let name = if is_re {
                        regsub(&w, &matches)
                    } else {
                        subst(&stem, &w)
                    };
                    let n = self.applyrules(&name, cnt);
                    arcs.push(Arc {
                        n: Some(n),
                        r,
                        stem: stem.clone(),
                        matches: matches.clone(),
                        togo: false,
                        prog: prog.clone(),
                    });
                }
            }
            cnt[id] -= 1;
        }
        let old = std::mem::take(&mut self.nodes[node].prereqs);
        arcs.extend(old);
        self.nodes[node].prereqs = arcs;
        node
    }

    fn cyclechk(&mut self, n: NodeId) -> R<()> {
        stacker::maybe_grow(64 * 1024, 1024 * 1024, || self.cyclechk_inner(n))
    }

    fn cyclechk_inner(&mut self, n: NodeId) -> R<()> {
        let f = self.nodes[n].flags;
        if f & CYCLE != 0 && !self.nodes[n].prereqs.is_empty() {
            eprintln!(
                "mk: cycle in graph detected at target {}",
                self.nodes[n].name
            );
            return Err(Failed);
        }
        if f & CYCLEDONE != 0 {
            return Ok(());
        }
        self.nodes[n].flags |= CYCLE;
        for i in 0..self.nodes[n].prereqs.len() {
            if let Some(m) = self.nodes[n].prereqs[i].n {
                self.cyclechk(m)?;
            }
        }
        self.nodes[n].flags &= !CYCLE;
        self.nodes[n].flags |= CYCLEDONE;
        Ok(())
    }

    fn vacuous(&mut self, n: NodeId) -> bool {
        stacker::maybe_grow(64 * 1024, 1024 * 1024, || self.vacuous_inner(n))
    }

    fn vacuous_inner(&mut self, n: NodeId) -> bool {
        let f = self.nodes[n].flags;
        if f & READY != 0 {
            return f & VACUOUS != 0;
        }
        self.nodes[n].flags |= READY;
        let mut vac = f & PROBABLE == 0;
        for i in 0..self.nodes[n].prereqs.len() {
            let (m, r) = (self.nodes[n].prereqs[i].n, self.nodes[n].prereqs[i].r);
            let goes = match m {
                Some(m) => self.vacuous(m) && self.rules[r].attr.meta,
                None => false,
            };
            if goes {
                self.nodes[n].prereqs[i].togo = true;
            } else {
                vac = false;
            }
        }
        // If a rule made arcs that stay, none of its arcs go.
        let staying: Vec<RuleId> = self.nodes[n]
            .prereqs
            .iter()
            .filter(|a| !a.togo)
            .map(|a| a.r)
            .collect();
        for a in self.nodes[n].prereqs.iter_mut() {
            if a.togo && staying.contains(&a.r) {
                a.togo = false;
            }
        }
        self.nodes[n].prereqs.retain(|a| !a.togo);
        if vac {
            self.nodes[n].flags |= VACUOUS;
        }
        vac
    }

    fn ambiguous(&mut self, n: NodeId) -> R<()> {
        stacker::maybe_grow(64 * 1024, 1024 * 1024, || self.ambiguous_inner(n))
    }

    fn ambiguous_inner(&mut self, n: NodeId) -> R<()> {
        if self.nodes[n].flags & SEEN != 0 {
            return Ok(());
        }
        self.nodes[n].flags |= SEEN;
        let mut r: Option<RuleId> = None;
        let mut la: usize = 0;
        let mut bad = false;
        for i in 0..self.nodes[n].prereqs.len() {
            if let Some(m) = self.nodes[n].prereqs[i].n {
                self.ambiguous(m)?;
            }
            let ar = self.nodes[n].prereqs[i].r;
            if self.rules[ar].recipe.is_empty() {
                continue;
            }
            match r {
                None => {
                    r = Some(ar);
                    la = i;
                }
                Some(cur) => {
                    if !std::rc::Rc::ptr_eq(&self.rules[cur].recipe, &self.rules[ar].recipe) {
                        let (cm, am) = (self.rules[cur].attr.meta, self.rules[ar].attr.meta);
                        if cm && !am {
                            self.nodes[n].prereqs[la].togo = true;
                            r = Some(ar);
                            la = i;
                        } else if !cm && am {
                            self.nodes[n].prereqs[i].togo = true;
                            continue;
                        }
                    }
                    let cur = r.unwrap_or(ar);
                    if !std::rc::Rc::ptr_eq(&self.rules[cur].recipe, &self.rules[ar].recipe) {
                        if !bad {
                            eprintln!("mk: ambiguous recipes for {}:", self.nodes[n].name);
                            bad = true;
                            self.trace(n, la);
                        }
                        self.trace(n, i);
                    }
                }
            }
        }
        if bad {
            return Err(Failed);
        }
        self.nodes[n].prereqs.retain(|a| !a.togo);
        Ok(())
    }

    /// The chain of rules behind an arc, for the ambiguity message.
    fn trace(&self, n: NodeId, ai: usize) {
        let mut s = format!("\t{}", self.nodes[n].name);
        let mut a = Some(&self.nodes[n].prereqs[ai]);
        while let Some(arc) = a {
            let r = &self.rules[arc.r];
            let name = arc.n.map_or("", |m| self.nodes[m].name.as_str());
            s.push_str(&format!(" <-({}:{})- {}", r.file, r.line, name));
            a = match arc.n {
                Some(m) => self.nodes[m]
                    .prereqs
                    .iter()
                    .find(|x| !self.rules[x.r].recipe.is_empty()),
                None => None,
            };
        }
        eprintln!("{s}");
    }

    fn attribute(&mut self, n: NodeId, seen: &mut Vec<bool>) {
        stacker::maybe_grow(64 * 1024, 1024 * 1024, || self.attribute_inner(n, seen))
    }

    fn attribute_inner(&mut self, n: NodeId, seen: &mut Vec<bool>) {
        if seen[n] {
            return;
        }
        seen[n] = true;
        for i in 0..self.nodes[n].prereqs.len() {
            let (m, r) = (self.nodes[n].prereqs[i].n, self.nodes[n].prereqs[i].r);
            let a = self.rules[r].attr;
            if a.v {
                self.nodes[n].flags |= VIRTUAL;
            }
            if a.nn {
                self.nodes[n].flags |= NORECIPE;
            }
            if a.d {
                self.nodes[n].flags |= DELETE;
            }
            if let Some(m) = m {
                self.attribute(m, seen);
            }
        }
        if self.nodes[n].flags & VIRTUAL != 0 {
            self.nodes[n].time = 0;
        }
    }
}
