"""The pipeline steps, one module per step; each is a tool that runs alone and resumes."""
