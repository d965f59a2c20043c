//! Dump: freeze -> collect -> write -> release.
