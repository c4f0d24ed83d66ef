"""The workflows: one function per action, each deciding through the policy engine before it acts."""
