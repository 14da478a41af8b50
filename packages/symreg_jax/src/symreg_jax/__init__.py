"""GESR: genetic-programming symbolic regression guided by two small BERT models."""

from ._bert import CrossoverModel as CrossoverModel
from ._bert import MutationModel as MutationModel
from ._buffer import EditBuffer as EditBuffer
from ._buffer import edit_weights as edit_weights
from ._buffer import merge_buffers as merge_buffers
from ._estimator import GESRRegressor as GESRRegressor
from ._estimator import pareto_front as pareto_front
from ._evaluate import evaluate_population as evaluate_population
from ._evaluate import evaluate_reference as evaluate_reference
from ._evaluate import normalized_mse as normalized_mse
from ._evaluate import to_jax_function as to_jax_function
from ._export import is_symbolic_match as is_symbolic_match
from ._export import to_latex as to_latex
from ._export import to_sympy as to_sympy
from ._gp import Engine as Engine
from ._gp import GPConfig as GPConfig
from ._gp import GPState as GPState
from ._gp import make_engine as make_engine
from ._primitives import DEFAULT_OPERATORS as DEFAULT_OPERATORS
from ._primitives import OPERATORS as OPERATORS
from ._primitives import PrimitiveSet as PrimitiveSet
from ._sharding import evaluate_population_sharded as evaluate_population_sharded
from ._sharding import population_mesh as population_mesh
from ._train import crossover_data as crossover_data
from ._train import crossover_edit_scores as crossover_edit_scores
from ._train import crossover_loss as crossover_loss
from ._train import crossover_value_loss as crossover_value_loss
from ._train import load_model as load_model
from ._train import mutation_data as mutation_data
from ._train import mutation_edit_scores as mutation_edit_scores
from ._train import mutation_loss as mutation_loss
from ._train import mutation_value_loss as mutation_value_loss
from ._train import save_model as save_model
from ._train import train_model as train_model
from ._tree import expression_length as expression_length
from ._tree import is_valid_reference as is_valid_reference
from ._tree import random_tree as random_tree
from ._tree import random_trees as random_trees
from ._tree import splice as splice
from ._tree import subtree_end as subtree_end

__version__ = "0.1.0"
