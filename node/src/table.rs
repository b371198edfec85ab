//! Plain-text tables with aligned columns for the readable output of `gristmill ctl`.

use std::fmt::Write;

/// A table of text cells; the header sets the number of columns.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Starts a table with these column titles.
    pub fn new(header: Vec<&'static str>) -> Table {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    /// Appends a row; it must have one cell per column.
    pub fn push(&mut self, row: Vec<String>) {
        debug_assert_eq!(
            row.len(),
            self.header.len(),
            "row width differs from header"
        );
        self.rows.push(row);
    }

    /// Renders the table with columns two spaces apart and no trailing spaces.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|title| title.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let header = self.header.iter().map(|title| title.to_string()).collect();
        let mut text = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                write!(line, "{cell:<width$}  ").expect("writing to a String cannot fail");
            }
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Returns `count` followed by `singular` when it is 1 and by `plural` otherwise.
pub fn counted(count: impl Into<u64>, singular: &str, plural: &str) -> String {
    let count = count.into();
    let noun = if count == 1 { singular } else { plural };
    format!("{count} {noun}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_widest_cell() {
        let mut table = Table::new(vec!["NAME", "STATE"]);
        table.push(vec!["node-10".into(), "ACTIVE".into()]);
        table.push(vec!["n".into(), "DEAD".into()]);

        assert_eq!(
            table.render(),
            "NAME     STATE\nnode-10  ACTIVE\nn        DEAD\n"
        );
    }
}
