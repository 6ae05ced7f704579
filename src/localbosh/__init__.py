"""Development tooling: the local deployment (DESIGN §9). Never shipped in the release."""
