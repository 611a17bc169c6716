// Owns the precompiled header (runner/core/pch.h) that the other targets reuse.
