"""Evaluation: the Eigen and Make3D protocols, running a trained network over a test set, and Tables 1-3 and the figures."""
