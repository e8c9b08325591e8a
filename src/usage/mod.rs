//! GPU-hours and CPU time: the ledger's maths (`ledger`, pure), what each activity sample
//! adds to it (`accounting`), and the reports and budgets the pages and the API show
//! (`reports`).

pub mod accounting;
pub mod ledger;
pub mod reports;

pub use ledger::{day_key, month_start, parse_range, report, Budget, GroupBy, Range, Row};
pub use reports::{UsageError, UsageReports};
