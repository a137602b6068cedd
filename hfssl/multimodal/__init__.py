"""Image-text pairs for CLIP-style pretraining: the procedural shapes set, captioned Fashion-MNIST, the user's own pairs."""
