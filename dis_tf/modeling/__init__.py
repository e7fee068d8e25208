"""The DIS network: backbones, the three subnets, the Gram operator, DISModel.

Submodules: `backbones` (dilated ResNet50/101, tiny CPU backbone), `subnets`
(subnet-1/2/3 and tag refinement), `gram` (the Gram operator of subnet-1/3
behind the fast latent steps), `dis_model` (`DISModel`, `build_dis_model`).
"""
