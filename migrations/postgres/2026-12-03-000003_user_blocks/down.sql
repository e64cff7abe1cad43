DROP TABLE IF EXISTS user_blocks;
