"""Reading live state, diff, plan, rendering, apply, lifecycle policy."""
