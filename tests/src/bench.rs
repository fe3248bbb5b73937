//! One benchmark figure as `scripts/bench.sh` prints and stores it: a value
//! beside its reference measured in the same run, and their ratio.

use serde_json::{json, Value};

pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: &'static str,
    /// The same quantity measured on the reference (memcpy, the baseline,
    /// the refresh period...), in the same run.
    pub reference: f64,
    pub goal: &'static str,
}

impl Figure {
    pub fn new(
        name: impl Into<String>,
        value: f64,
        unit: &'static str,
        reference: f64,
        goal: &'static str,
    ) -> Figure {
        Figure {
            name: name.into(),
            value,
            unit,
            reference,
            goal,
        }
    }

    pub fn ratio(&self) -> f64 {
        self.value / self.reference
    }

    /// The figure on one line.
    pub fn print(&self) {
        println!(
            "{:<44} {:>10.1} {:<6}  reference {:>10.1}  ratio {:>8.4}  (goal {})",
            self.name,
            self.value,
            self.unit,
            self.reference,
            self.ratio(),
            self.goal
        );
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name, "value": self.value, "unit": self.unit,
            "reference": self.reference, "ratio": self.ratio(), "goal": self.goal,
        })
    }
}
