"""Train tasks: MONAI Label TrainTasks publishing new weights that the infer tasks pick up without a restart."""
