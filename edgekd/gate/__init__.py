"""Release stage: decide pass/fail against a policy, choose what ships, write the bundles."""
