//! Deciding what is out of date and making it, as plan9port's mk does: a target no
//! newer than a prerequisite is out of date; a missing intermediate file may
//! "pretend" to be as new as its prerequisites when that leaves its parent current.

use crate::graph::*;
use crate::{Failed, Job, Mk, NodeId, R, mtime};

impl Mk {
    /// Make one target.
    pub fn mk(&mut self, target: &str) -> R<()> {
        self.nproc();
        self.nrep();
        self.runerrs = 0;
        let node = self.graph(target)?;
        if self.dgraph {
            let mut out = format!("nreps = {}\nnew target\n", self.nreps);
            let mut seen = vec![false; self.nodes.len()];
            self.dump_node(node, "", &mut out, &mut seen);
            self.bprint(&out);
            self.flush();
        }
        let mut seen = vec![false; self.nodes.len()];
        self.clrmade(node, &mut seen);
        let mut did = false;
        while self.nodes[node].flags & NOTMADE != 0 {
            if self.work(node, None, None)? {
                did = true;
            } else if self.waitup(1)? > 0 && self.nodes[node].flags & (NOTMADE | BEINGMADE) != 0 {
                // Nothing more to wait for: there were errors (-k).
                break;
            }
        }
        if self.nodes[node].flags & BEINGMADE != 0 {
            self.waitup(-1)?;
        }
        while !self.jobs.is_empty() || self.running() > 0 {
            if self.waitup(-2)? > 0 {
                break;
            }
        }
        if !did {
            self.bprint(&format!("mk: '{}' is up to date\n", self.nodes[node].name));
        }
        Ok(())
    }

    /// `-dg`: a node, its date and flags, and (once) what it depends on.
    fn dump_node(&self, n: NodeId, indent: &str, out: &mut String, seen: &mut Vec<bool>) {
        let node = &self.nodes[n];
        out.push_str(&format!(
            "{indent}{}: time={} flags=0x{:x}\n",
            node.name,
            secs(node.time),
            node.flags
        ));
        if seen[n] {
            return;
        }
        seen[n] = true;
        for a in &node.prereqs {
            let r = &self.rules[a.r];
            out.push_str(&format!(
                "{indent}    arc: rule {}:{} stem='{}'",
                r.file, r.line, a.stem
            ));
            if let Some(p) = &a.prog {
                out.push_str(&format!(" prog='{p}'"));
            }
            out.push('\n');
            if let Some(m) = a.n {
                self.dump_node(m, &format!("{indent}        "), out, seen);
            }
        }
    }

    fn clrmade(&mut self, n: NodeId, seen: &mut Vec<bool>) {
        if seen[n] {
            return;
        }
        seen[n] = true;
        let node = &mut self.nodes[n];
        node.flags &= !(CANPRETEND | PRETENDING);
        if !node.name.contains('(') || node.time != 0 {
            node.flags |= CANPRETEND;
        }
        node.flags = (node.flags & !(NOTMADE | BEINGMADE | MADE)) | NOTMADE;
        let kids: Vec<NodeId> = node.prereqs.iter().filter_map(|a| a.n).collect();
        for k in kids {
            self.clrmade(k, seen);
        }
    }

    fn madeset(&mut self, n: NodeId, f: u32) {
        let node = &mut self.nodes[n];
        node.flags = (node.flags & !(NOTMADE | BEINGMADE | MADE)) | f;
    }

    fn unpretend(&mut self, n: NodeId) {
        self.madeset(n, NOTMADE);
        self.nodes[n].flags &= !(CANPRETEND | PRETENDING);
        self.nodes[n].time = 0;
    }

    /// Do what can be done now for `node` (child of `p` through arc `parc`); true if
    /// something was started.
    fn work(&mut self, node: NodeId, p: Option<NodeId>, parc: Option<usize>) -> R<bool> {
        stacker::maybe_grow(64 * 1024, 1024 * 1024, || self.work_inner(node, p, parc))
    }

    fn work_inner(&mut self, node: NodeId, p: Option<NodeId>, parc: Option<usize>) -> R<bool> {
        let mut did = false;
        let f = self.nodes[node].flags;
        if f & BEINGMADE != 0 {
            return Ok(false);
        }
        if f & MADE != 0 && f & PRETENDING != 0 {
            if let (Some(p), Some(pa)) = (p, parc) {
                if self.outofdate(p, pa, false)? {
                    if self.explain {
                        self.fprint1(&format!(
                            "unpretending {}({}) because {} is out of date({})\n",
                            self.nodes[node].name,
                            secs(self.nodes[node].time),
                            self.nodes[p].name,
                            secs(self.nodes[p].time)
                        ));
                    }
                    self.unpretend(node);
                }
            }
        }
        let f = self.nodes[node].flags;
        if f & MADE != 0 {
            if f & PRETENDING != 0 {
                self.nodes[node].time = 0;
            } else {
                return Ok(false);
            }
        }
        if self.nodes[node].prereqs.is_empty() {
            if self.nodes[node].time == 0 {
                let dir = std::env::current_dir()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default();
                self.flush();
                eprintln!(
                    "mk: don't know how to make '{}' in {dir}",
                    self.nodes[node].name
                );
                if self.kflag {
                    self.nodes[node].flags |= BEINGMADE;
                    self.runerrs += 1;
                } else {
                    return Err(Failed);
                }
            } else {
                self.madeset(node, MADE);
            }
            return Ok(false);
        }
        let mut ready = true;
        let mut weoutofdate = self.aflag;
        let mut ra: Option<usize> = None;
        for i in 0..self.nodes[node].prereqs.len() {
            match self.nodes[node].prereqs[i].n {
                Some(m) => {
                    // A prerequisite made for good needs no visit (the common case
                    // when a parent is looked at again after each of its children).
                    let mf = self.nodes[m].flags;
                    if mf & MADE == 0 || mf & PRETENDING != 0 {
                        did = self.work(m, Some(node), Some(i))? || did;
                    }
                    if self.nodes[m].flags & (NOTMADE | BEINGMADE) != 0 {
                        ready = false;
                    }
                    if self.outofdate(node, i, false)? {
                        weoutofdate = true;
                        let better = match ra {
                            None => true,
                            Some(r) => match self.nodes[node].prereqs[r].n {
                                None => true,
                                Some(rn) => self.nodes[rn].time < self.nodes[m].time,
                            },
                        };
                        if better {
                            ra = Some(i);
                        }
                    }
                }
                None => {
                    if self.nodes[node].time == 0 {
                        if ra.is_none() {
                            ra = Some(i);
                        }
                        weoutofdate = true;
                    }
                }
            }
        }
        if !ready {
            return Ok(did);
        }
        if !weoutofdate {
            self.madeset(node, MADE);
            return Ok(did);
        }
        // Can we pretend to be made?
        let f = self.nodes[node].flags;
        if !self.iflag && self.nodes[node].time == 0 && f & (PRETENDING | CANPRETEND) != 0 {
            if let (Some(p), Some(r)) = (p, ra) {
                if self.nodes[node].prereqs[r].n.is_some() {
                    // Would the parent be current against this one's newest prerequisite?
                    if !self.outofdate_arc(p, node, r, false)? {
                        self.nodes[node].flags &= !CANPRETEND;
                        self.madeset(node, MADE);
                        if self.explain && f & PRETENDING == 0 {
                            self.fprint1(&format!(
                                "pretending {} has time {}\n",
                                self.nodes[node].name,
                                secs(self.nodes[node].time)
                            ));
                        }
                        self.nodes[node].flags |= PRETENDING;
                        return Ok(did);
                    }
                }
            }
        }
        // Out of date for real: prerequisites that pretended must be made now.
        for i in 0..self.nodes[node].prereqs.len() {
            if let Some(m) = self.nodes[node].prereqs[i].n {
                if self.nodes[m].flags & PRETENDING != 0 {
                    if self.explain {
                        let because = ra
                            .and_then(|r| self.nodes[node].prereqs[r].n)
                            .map_or("rule with no prerequisites".to_string(), |x| {
                                self.nodes[x].name.clone()
                            });
                        self.bprint(&format!(
                            "unpretending {} because of {} because of {}\n",
                            self.nodes[m].name, self.nodes[node].name, because
                        ));
                    }
                    self.unpretend(m);
                    did = self.work(m, Some(node), Some(i))? || did;
                    ready = false;
                }
            }
        }
        if !ready {
            return Ok(did || self.work(node, p, parc)?);
        }
        Ok(self.dorecipe(node)? || did)
    }

    /// Record that `node` was made (`fake`: it failed, under -k).
    pub fn update(&mut self, fake: bool, node: NodeId) -> R<()> {
        self.madeset(node, if fake { BEINGMADE } else { MADE });
        let virt = self.nodes[node].flags & VIRTUAL != 0;
        // As plan9port: if the file is there, its date; for a name with `(` that is
        // not a file (an archive member), as for a missing file, its prerequisites'.
        let name = self.nodes[node].name.clone();
        let t = if virt {
            0
        } else if !name.contains('(') {
            mtime(&name)
        } else if std::fs::symlink_metadata(&name).is_ok() {
            let t = self.timeof(&name, true);
            if self.fatal {
                return Err(Failed);
            }
            t
        } else {
            0
        };
        if t != 0 {
            self.nodes[node].time = t;
            self.nodes[node].flags &= !(CANPRETEND | PRETENDING);
            for i in 0..self.nodes[node].prereqs.len() {
                if self.nodes[node].prereqs[i].prog.is_some() {
                    self.outofdate(node, i, true)?;
                }
            }
        } else {
            self.nodes[node].time = 1;
            for i in 0..self.nodes[node].prereqs.len() {
                if let Some(m) = self.nodes[node].prereqs[i].n {
                    if self.outofdate(node, i, true)? {
                        self.nodes[node].time = self.nodes[m].time;
                    }
                }
            }
        }
        Ok(())
    }

    /// Is `node` out of date with respect to its arc `ai`?
    pub fn outofdate(&mut self, node: NodeId, ai: usize, eval: bool) -> R<bool> {
        self.outofdate_arc(node, node, ai, eval)
    }

    /// Is `node` out of date with respect to arc `ai` of `owner` (plan9port compares a
    /// parent with a child's arc when deciding whether the child may pretend)?
    fn outofdate_arc(&mut self, node: NodeId, owner: NodeId, ai: usize, eval: bool) -> R<bool> {
        let arc = &self.nodes[owner].prereqs[ai];
        let Some(m) = arc.n else { return Ok(false) };
        if let Some(prog) = arc.prog.clone() {
            let r = arc.r;
            let (a, b) = (self.nodes[node].name.clone(), self.nodes[m].name.clone());
            return self.pcmp_cached(&prog, &a, &b, r, eval);
        }
        if self.nodes[m].time == 0 && self.nodes[m].name.contains('(') {
            return Ok(true);
        }
        Ok(self.nodes[node].time <= self.nodes[m].time)
    }

    /// `P` attribute: out of date iff `prog 'a' 'b'` fails (cached unless `eval`).
    fn pcmp_cached(
        &mut self,
        prog: &str,
        a: &str,
        b: &str,
        r: crate::RuleId,
        eval: bool,
    ) -> R<bool> {
        let key = format!("{a}\u{ff}{b}");
        if !eval {
            if let Some(&v) = self.outofdate_cache.get(&key) {
                return Ok(v);
            }
        }
        self.flush();
        let cmd = format!("{prog} '{a}' '{b}'\n");
        let shell = self.rules[r].shell.clone();
        let ok = self.pipecmd_status(&cmd, &shell);
        self.outofdate_cache.insert(key, !ok);
        Ok(!ok)
    }

    /// Start the recipe that makes `node` (and the other targets it makes).
    fn dorecipe(&mut self, node: NodeId) -> R<bool> {
        let mut aa: Option<usize> = None;
        for (i, a) in self.nodes[node].prereqs.iter().enumerate() {
            if !self.rules[a.r].recipe.is_empty() {
                aa = Some(i);
            }
        }
        let Some(ai) = aa else {
            let f = self.nodes[node].flags;
            if f & VIRTUAL == 0 && f & NORECIPE == 0 {
                self.flush();
                eprintln!("mk: no recipe to make '{}'", self.nodes[node].name);
                return Err(Failed);
            }
            if self.nodes[node].name.contains('(') && self.nodes[node].time == 0 {
                self.madeset(node, MADE);
            } else {
                self.update(false, node)?;
            }
            if self.tflag {
                if f & VIRTUAL == 0 {
                    let name = self.nodes[node].name.clone();
                    self.touch(&name)?;
                } else if self.explain {
                    self.bprint(&format!(
                        "no touch of virtual '{}'\n",
                        self.nodes[node].name
                    ));
                }
            }
            return Ok(false);
        };
        let r = self.nodes[node].prereqs[ai].r;
        let stem = self.nodes[node].prereqs[ai].stem.clone();
        let matches = self.nodes[node].prereqs[ai].matches.clone();
        self.nodes[node].next = None;
        let mut targets: Vec<String> = Vec::new();
        let mut alltargets: Vec<String> = Vec::new();
        let mut group: Vec<NodeId> = vec![node];
        if self.rules[r].attr.r {
            targets.push(self.nodes[node].name.clone());
            alltargets.push(self.nodes[node].name.clone());
        } else {
            let all = self.rules[r].all.clone();
            let meta = self.rules[r].attr.meta;
            for w in all.iter() {
                let name = if meta { subst(&stem, w) } else { w.clone() };
                alltargets.push(name.clone());
                let Some(&n) = self.node_of.get(&name) else {
                    continue;
                };
                if !self.aflag && self.nodes[n].time != 0 {
                    let mut any = false;
                    for i in 0..self.nodes[n].prereqs.len() {
                        if self.nodes[n].prereqs[i].n.is_some() && self.outofdate(n, i, false)? {
                            any = true;
                            break;
                        }
                    }
                    if !any {
                        continue;
                    }
                }
                targets.push(name);
                if n == node {
                    continue;
                }
                group.insert(1, n);
            }
        }
        for &n in &group {
            if self.nodes[n].flags & READY == 0 {
                return Ok(false);
            }
        }
        let mut prereq: Vec<String> = Vec::new();
        let mut newprereq: Vec<String> = Vec::new();
        for &n in &group {
            for i in 0..self.nodes[n].prereqs.len() {
                match self.nodes[n].prereqs[i].n {
                    Some(m) => {
                        let pn = self.nodes[m].name.clone();
                        if !prereq.contains(&pn) {
                            prereq.push(pn.clone());
                        }
                        if self.outofdate(n, i, false)? {
                            if !newprereq.contains(&pn) {
                                newprereq.push(pn.clone());
                            }
                            if self.explain {
                                self.fprint1(&format!(
                                    "{}({}) < {}({})\n",
                                    self.nodes[n].name,
                                    secs(self.nodes[n].time),
                                    pn,
                                    secs(self.nodes[m].time)
                                ));
                            }
                        }
                    }
                    None => {
                        if self.explain {
                            self.fprint1(&format!("{} has no prerequisites\n", self.nodes[n].name));
                        }
                    }
                }
            }
            self.madeset(n, BEINGMADE);
        }
        self.run(Job {
            rule: r,
            nodes: group,
            stem,
            matches,
            prereq,
            newprereq,
            targets,
            alltargets,
        })?;
        Ok(true)
    }
}

/// Whole seconds of a time, as mk prints them.
pub fn secs(t: i128) -> i128 {
    t / 1_000_000_000
}
