//! Signals: dispositions, masks, pending signals (per thread and shared), sigaltstack.
