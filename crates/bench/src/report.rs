//! The results: one [`Row`] per measurement with its target and verdict, notes, and the
//! table printed at the end (and written as markdown with `--out`).

use crate::machine::Machine;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Miss,
    /// A number without a target (or any number in `--quick`).
    Info,
    /// The harness could not measure: the only verdict that fails the process.
    Error,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Miss => "MISS",
            Verdict::Info => "",
            Verdict::Error => "ERROR",
        }
    }
}

/// PASS or MISS; in `--quick` never either (its sizes mean nothing).
pub fn judge(ok: bool, quick: bool) -> Verdict {
    if quick {
        Verdict::Info
    } else if ok {
        Verdict::Pass
    } else {
        Verdict::Miss
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub id: &'static str,
    pub what: String,
    pub value: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    pub verdict: Verdict,
}

impl Row {
    pub fn info(id: &'static str, what: impl Into<String>, value: impl Into<String>) -> Self {
        Row {
            id,
            what: what.into(),
            value: value.into(),
            baseline: String::new(),
            ratio: String::new(),
            target: String::new(),
            verdict: Verdict::Info,
        }
    }

    pub fn error(id: &'static str, what: impl Into<String>, err: &anyhow::Error) -> Self {
        let mut r = Row::info(id, what, format!("error: {err:#}"));
        r.verdict = Verdict::Error;
        r
    }

    /// The row with a target, met when `ok`.
    pub fn judged(mut self, target: impl Into<String>, ok: bool, quick: bool) -> Self {
        self.target = target.into();
        self.verdict = judge(ok, quick);
        self
    }

    /// The row with a minimum for `value` as its target.
    pub fn at_least(self, value: f64, unit: &str, min: f64, quick: bool) -> Self {
        self.judged(format!("≥ {} {unit}", fmt_num(min)), value >= min, quick)
    }

    /// The row with a minimum ratio of `value` to a pgbench rate as its target; without
    /// that rate (pgbench not run or failed) it shows n/a and stays unjudged.
    pub fn ratio_to_pgbench(
        mut self,
        value: f64,
        pgbench_tps: Option<f64>,
        min_ratio: f64,
        quick: bool,
    ) -> Self {
        self.target = format!("≥ {min_ratio:.1}× pgbench");
        match pgbench_tps {
            Some(b) if b > 0.0 => {
                let ratio = value / b;
                self.baseline = format!("{} tps", fmt_num(b));
                self.ratio = format!("{ratio:.2}×");
                self.verdict = judge(ratio >= min_ratio, quick);
            }
            _ => {
                self.baseline = "n/a".into();
                self.ratio = "n/a".into();
            }
        }
        self
    }
}

/// The pgbench rates of phase (e), the baselines of (c) and (a).
#[derive(Default)]
pub struct PgbenchTps {
    /// The single-row formId INSERT, for (a) ingestion.
    pub insert: Option<f64>,
    /// The single claim UPDATE, for (c) claim-and-consume.
    pub claim: Option<f64>,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    notes: Vec<String>,
    pub pgbench: PgbenchTps,
    /// Further markdown sections for --out (the soak's windows).
    pub sections: Vec<String>,
}

impl Report {
    /// Adds a row, printing it at once (the table only comes at the end).
    pub fn push(&mut self, row: Row) {
        println!(
            "  -> {} {}: {} {} {}",
            row.id,
            row.what,
            row.value,
            row.ratio,
            row.verdict.as_str()
        );
        self.rows.push(row);
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        println!("  note: {note}");
        self.notes.push(note);
    }

    /// A phase that could not run becomes an ERROR row.
    pub fn error_if_failed(
        &mut self,
        id: &'static str,
        what: impl Into<String>,
        outcome: anyhow::Result<()>,
    ) {
        if let Err(e) = outcome {
            self.push(Row::error(id, what, &e));
        }
    }

    pub fn markdown(&self, machine: &Machine, command: &str) -> String {
        let mut s = String::new();
        s.push_str(&format!("### Run of {}\n\n", machine.date));
        s.push_str(&format!("Command: `{command}`\n\n"));
        s.push_str(&format!(
            "Machine: {} cores ({}), {} RAM, {}; git {}\n\n",
            machine.nproc, machine.cpu, machine.memory, machine.postgres, machine.git
        ));
        s.push_str("| | measurement | result | pgbench | ratio | target | verdict |\n");
        s.push_str("|---|---|---|---|---|---|---|\n");
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.id,
                r.what,
                r.value.replace('|', "/"),
                r.baseline,
                r.ratio,
                r.target,
                r.verdict.as_str()
            ));
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
        for section in &self.sections {
            s.push('\n');
            s.push_str(section);
        }
        s
    }

    pub fn print_table(&self) {
        let headers = [
            "",
            "measurement",
            "result",
            "pgbench",
            "ratio",
            "target",
            "verdict",
        ];
        let cells: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.id.to_string(),
                    r.what.clone(),
                    r.value.clone(),
                    r.baseline.clone(),
                    r.ratio.clone(),
                    r.target.clone(),
                    r.verdict.as_str().to_string(),
                ]
            })
            .collect();
        let mut widths = headers.map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cols: Vec<&str>| {
            let parts: Vec<String> = cols
                .iter()
                .zip(widths.iter())
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            println!("{}", parts.join(" | ").trim_end());
        };
        println!();
        line(headers.to_vec());
        println!(
            "{}",
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("-+-")
        );
        for row in &cells {
            line(row.iter().map(String::as_str).collect());
        }
        for n in &self.notes {
            println!("note: {n}");
        }
    }
}

/// A number as the table shows it: thousands separated from 100 up, else 1 or 2 decimals.
pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v.abs() >= 100.0 {
        let n = v.round() as i64;
        let digits = n.abs().to_string();
        let mut out = String::new();
        for (i, ch) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(ch);
        }
        if n < 0 {
            format!("-{out}")
        } else {
            out
        }
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
